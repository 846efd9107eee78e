"""Pure-torch building blocks: no OpenMMLab import below this package.

Modules, each with one job:

* :mod:`.focal_attention`: the paper's focal attention and block (:class:`FocalWindowAttention`,
  :class:`FocalTransformerBlock`);
* :mod:`.focal_fast_attention`: the authors' Focal-fast attention and block
  (:class:`FocalFastAttention`, :class:`FocalFastTransformerBlock`);
* :mod:`.key_layout` / :mod:`.fast_key_layout`: where each window's keys come from, for each;
* :mod:`.attention_kernels`: :func:`~.attention_kernels.attend`, the attention both share, over
  the paths of :mod:`.plain_paths`, :mod:`.fused_paths` and :mod:`.recompute_path`, in chunks of
  windows (:mod:`.chunking`);
* :mod:`.attention_switch`: :func:`attention_path`, the public switch that forces a path, and the
  one rule that chooses (:func:`choose_path`, :func:`explain_path`);
* :mod:`.torch_kernels` / :mod:`.compiled_kernels`: PyTorch's attention kernels, and mmfocal's own
  CPU kernels for FocalTransformer's attention (``csrc/``), each saying what it supports;
* :mod:`.parameter_cache`: tensors built from parameters alone (the position biases), kept
  between passes without gradients;
* :mod:`.block`: the block around an attention (pooling, norms, MLP, residuals);
* :mod:`.windows`: partitioning maps into windows and merging them back;
* :mod:`.tracing`: whether a forward pass is traced (export, compilation), and by what.
"""
from .attention_switch import (
    ATTENTION_PATHS,
    AttentionSettings,
    PathChoice,
    attention_path,
    attention_settings,
    choose_path,
    explain_path,
)
from .focal_attention import FocalTransformerBlock, FocalWindowAttention
from .focal_fast_attention import FocalFastAttention, FocalFastTransformerBlock
from .tracing import UnknownTracerError, is_tracing

__all__ = ['ATTENTION_PATHS', 'AttentionSettings', 'FocalFastAttention', 'FocalFastTransformerBlock',
           'FocalTransformerBlock', 'FocalWindowAttention', 'PathChoice', 'UnknownTracerError', 'attention_path',
           'attention_settings', 'choose_path', 'explain_path', 'is_tracing']
