"""The entry both focal attentions call: :func:`attend` runs the path the switch chooses.

The parts, each one job: :mod:`.attention_switch` (the process-wide switch and the rule that
chooses), :mod:`.chunking` (chunks of windows and their biases), :mod:`.plain_paths`
(``'standard_ops'``, ``'autograd'``), :mod:`.fused_paths` and :mod:`.recompute_path` (``'fused'``,
``'recompute'``), :mod:`.torch_kernels` and :mod:`.compiled_kernels` (the kernels under them).
Every path computes the same function (tests/test_backbone.py and tests/test_focal_fast.py check
each against a float64 implementation, outputs and gradients); docs/attention_kernels.md.
"""
import logging
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .attention_switch import choose_path
from .fused_paths import CompiledFocalAttention, attend_fused, compiled_forward
from .plain_paths import attend_with_autograd, attend_with_standard_ops
from .recompute_path import FocalAttentionCore

logger = logging.getLogger(__name__)
_logged_choices = set()


def attend(q: torch.Tensor, source: torch.Tensor, index: torch.Tensor, bias: torch.Tensor, off_map: torch.Tensor,
           attn_drop: nn.Module, training: bool, record: bool = False,
           bias_columns=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """softmax(q k^T + bias + off_map) v by the path :func:`~.attention_switch.choose_path` chooses.

    With the logger ``mmfocal.models.layers`` at DEBUG, each new choice (path, kernels, and why
    not the faster ones) is logged once.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Every key and value any window uses, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``, window by window.
        bias (torch.Tensor): Position bias, as :func:`~.chunking.chunk_bias` takes it.
        off_map (torch.Tensor): (nW, keys) logits added to every query's scores.
        attn_drop (nn.Module): Dropout on the attention weights.
        training (bool): Whether the attention is in training mode.
        record (bool): Whether to return the attention weights. Defaults to False.
        bias_columns (optional): Per-window bias columns (:class:`~.chunking.BiasColumns`).
            Defaults to None.

    Returns:
        tuple[torch.Tensor, torch.Tensor | None]: The output (B*nW, w*w, heads, d), and with
        ``record`` the weights (B*nW, heads, w*w, keys), else None.
    """
    args = (q, source, index, bias, off_map)
    choice = choose_path(q, source, bias, attn_drop, training, record, bias_columns)
    if record:
        return attend_with_autograd(*args, attn_drop, return_weights=True, bias_columns=bias_columns)
    if choice.path == 'standard_ops':
        return attend_with_standard_ops(*args, attn_drop, bias_columns=bias_columns), None
    if logger.isEnabledFor(logging.DEBUG) and choice not in _logged_choices:
        _logged_choices.add(choice)
        logger.debug('focal attention: path %r on %s kernels%s', choice.path, choice.kernels or 'plain',
                     ''.join(f'\n  why: {line}' for line in choice.why))
    if choice.path == 'autograd':
        out = attend_with_autograd(*args, attn_drop, bias_columns=bias_columns)
    elif choice.kernels == 'compiled':
        out = CompiledFocalAttention.apply(*args) if choice.path == 'recompute' else compiled_forward(*args)
    elif choice.path == 'recompute':
        out = FocalAttentionCore.apply(*args, bias_columns)
    else:
        out = attend_fused(*args, need_lse=False, bias_columns=bias_columns)[0]
    return out, None
