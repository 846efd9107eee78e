"""The plain attention paths: softmax(q k^T + bias + off_map) v in standard ops under autograd.

- ``'standard_ops'`` (:func:`attend_with_standard_ops`): every window at once, in ops every tracer
  records correctly (export, compilation);
- ``'autograd'`` (:func:`attend_with_autograd`): gather, matmul and softmax, which can apply
  attention dropout and return the attention weights.

Shapes, for B images of nW windows of w*w queries, ``heads`` heads of ``d`` channels: q (B*nW,
w*w, heads, d); source (B, S, 2, heads, d), every key and value any window uses; index (nW *
keys,) into it; bias as :func:`~.chunking.chunk_bias` takes it; off_map (nW, keys).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .chunking import chunk_bias


def attend_with_standard_ops(q: torch.Tensor, source: torch.Tensor, index: torch.Tensor, bias: torch.Tensor,
                             off_map: torch.Tensor, attn_drop: Optional[nn.Module] = None,
                             bias_columns=None) -> torch.Tensor:
    """The attention in standard ops, for export and compilation.

    Every window at once, no in-place writes, no private kernels, no Python branch on sizes or
    values.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        bias (torch.Tensor): Position bias, as :func:`~.chunking.chunk_bias` takes it.
        off_map (torch.Tensor): (nW, keys) logits.
        attn_drop (nn.Module, optional): Dropout on the probabilities. Defaults to None.
        bias_columns (optional): As :func:`~.chunking.chunk_bias` takes them. Defaults to None.

    Returns:
        torch.Tensor: (B*nW, w*w, heads, d).
    """
    batch, _, _, heads, head_dims = source.shape
    window_area = q.shape[1]
    num_keys = off_map.shape[-1]
    # Heads ahead of the windows, as the batched MatMuls want them: one transpose of the key source
    # (about the map's size) instead of two of the gathered keys and values (keys times larger).
    keys, values = source.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, S, d) each
    k = keys.index_select(2, index).view(batch, heads, -1, num_keys, head_dims)  # (B, heads, nW, keys, d)
    v = values.index_select(2, index).view(batch, heads, -1, num_keys, head_dims)
    q_by_head = q.view(batch, -1, window_area, heads, head_dims).permute(0, 3, 1, 2, 4)  # (B, heads, nW, w*w, d)
    # (heads, nW or 1, w*w, keys). A shared bias skips chunk_bias: a slice of the (symbolic) window
    # count inside its WindowChunk would pin that count in a guard, recompiling for every size.
    if bias_columns is not None or bias.dim() == 4:
        bias = chunk_bias(bias, bias_columns, slice(0, off_map.shape[0]))
    else:
        bias = bias.unsqueeze(1)
    scores = q_by_head @ k.transpose(-2, -1) + bias + off_map[:, None, :]
    probs = scores.softmax(-1)
    if attn_drop is not None:
        probs = attn_drop(probs)
    return (probs @ v).permute(0, 2, 3, 1, 4).reshape(q.shape)


def attend_with_autograd(q: torch.Tensor, source: torch.Tensor, index: torch.Tensor, bias: torch.Tensor,
                         off_map: torch.Tensor, attn_drop: nn.Module, return_weights: bool = False,
                         bias_columns=None):
    """The attention by gather, matmul and softmax under autograd.

    Taken with attention dropout (the fused kernels cannot replay it) and when the attention
    weights are recorded.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        bias (torch.Tensor): Position bias, as :func:`~.chunking.chunk_bias` takes it.
        off_map (torch.Tensor): (nW, keys) logits.
        attn_drop (nn.Module): Dropout on the probabilities.
        return_weights (bool): Whether to return the weights too. Defaults to False.
        bias_columns (optional): As :func:`~.chunking.chunk_bias` takes them. Defaults to None.

    Returns:
        torch.Tensor | tuple[torch.Tensor, torch.Tensor]: The output (B*nW, w*w, heads, d), and
        with ``return_weights`` the weights (B*nW, heads, w*w, keys) after dropout.
    """
    num_windows = off_map.shape[0]
    if bias_columns is not None or bias.dim() == 4:  # one bias per window: (nW, heads, w*w, keys)
        bias = chunk_bias(bias, bias_columns, slice(0, num_windows)).transpose(0, 1)
    k, v = gather_keys(source, index, num_windows)
    q = q.transpose(1, 2)
    attn = q @ k.transpose(-2, -1)
    batch = q.shape[0] // num_windows
    attn = attn.view(batch, num_windows, *attn.shape[1:]) + bias + off_map[:, None, None, :]
    attn = attn_drop(attn.softmax(-1)).flatten(0, 1)
    out = (attn @ v).transpose(1, 2)
    return (out, attn) if return_weights else out


def gather_keys(source: torch.Tensor, index: torch.Tensor, num_windows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of every window.

    Args:
        source (torch.Tensor): (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        num_windows (int): nW.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: Keys and values, (B*nW, heads, keys, d) each, strided views.
    """
    batch, _, _, heads, head_dims = source.shape
    kv = source.index_select(1, index).view(batch * num_windows, -1, 2, heads, head_dims)
    return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
