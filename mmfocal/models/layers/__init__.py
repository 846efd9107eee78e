"""Pure-torch building blocks: no OpenMMLab import below this package.

Modules, each with one job:

* :mod:`.focal_attention`: the paper's focal attention and block (:class:`FocalWindowAttention`,
  :class:`FocalTransformerBlock`);
* :mod:`.focal_fast_attention`: the authors' Focal-fast attention and block
  (:class:`FocalFastAttention`, :class:`FocalFastTransformerBlock`);
* :mod:`.key_layout` / :mod:`.fast_key_layout`: where each window's keys come from, for each;
* :mod:`.attention_kernels`: the attention paths both share, and :func:`attention_path`, the
  public switch that forces one;
* :mod:`.compiled_kernels`: mmfocal's own CPU kernels for FocalTransformer's attention
  (``csrc/``), built on first use for PyTorch's vector width (AVX-512 or AVX2);
* :mod:`.parameter_cache`: tensors built from parameters alone (the position biases), kept
  between passes without gradients;
* :mod:`.block`: the block around an attention (pooling, norms, MLP, residuals);
* :mod:`.windows`: partitioning maps into windows and merging them back;
* :mod:`.tracing`: whether a forward pass is traced (export, compilation), and by what.
"""
from .attention_kernels import ATTENTION_PATHS, AttentionSettings, attention_path, attention_settings
from .focal_attention import FocalTransformerBlock, FocalWindowAttention
from .focal_fast_attention import FocalFastAttention, FocalFastTransformerBlock
from .tracing import UnknownTracerError, is_tracing

__all__ = ['ATTENTION_PATHS', 'AttentionSettings', 'FocalFastAttention', 'FocalFastTransformerBlock',
           'FocalTransformerBlock', 'FocalWindowAttention', 'UnknownTracerError', 'attention_path',
           'attention_settings', 'is_tracing']
