"""The fused attention paths' forward, on PyTorch's kernels or mmfocal's compiled ones.

- :func:`attend_fused`: softmax(q k^T + bias + off_map) v by fused attention calls over chunks
  of windows (:mod:`.torch_kernels`), the forward of ``'fused'`` and of ``'recompute'``
  (:class:`~.recompute_path.FocalAttentionCore` adds its backward);
- :class:`CompiledFocalAttention` and :func:`compiled_forward`: the same on mmfocal's compiled CPU
  kernels (:mod:`.compiled_kernels`), with and without the recomputing backward.

Shapes as :mod:`.plain_paths`.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import compiled_kernels
from .attention_switch import uses_cpu_kernels
from .chunking import as_bias_columns, bias_chunks, chunk_bias, chunk_bytes, has_off_map_keys, off_map_flags, put, take
from .torch_kernels import kernel


def attend_fused(q: torch.Tensor, source: torch.Tensor, index: torch.Tensor, bias: torch.Tensor,
                 off_map: torch.Tensor, need_lse: bool = True, bias_columns=None,
                 windows_off_map: Optional[list] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The attention by fused attention calls over chunks of windows.

    On the CPU both results come from PyTorch's flash kernel; on other devices the output alone
    from ``scaled_dot_product_attention``, with the log-sum-exp from matmul and softmax.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        bias (torch.Tensor): Position bias, as :func:`~.chunking.chunk_bias` takes it.
        off_map (torch.Tensor): (nW, keys) logits.
        need_lse (bool): Whether to return the log-sum-exp (for a backward). Defaults to True.
        bias_columns (optional): As :func:`~.chunking.chunk_bias` takes them. Defaults to None.
        windows_off_map (list, optional): :func:`~.chunking.off_map_flags` of ``off_map`` where
            the caller has them. Defaults to None.

    Returns:
        tuple[torch.Tensor, torch.Tensor | None]: The output (B*nW, w*w, heads, d) and, with
        ``need_lse``, the log-sum-exp (B*nW, heads, w*w), at least float32.
    """
    num_windows, num_keys = off_map.shape
    batch, _, _, heads, head_dims = source.shape
    window_area = q.shape[1]
    bias = bias.to(q.dtype)
    off_map = off_map.to(q.dtype)
    bias_columns = as_bias_columns(bias_columns)
    index_by_window = index.view(num_windows, num_keys)
    on_cpu = uses_cpu_kernels(q.device)
    bytes_per_window = num_keys * (2 * heads * head_dims + heads * window_area) * q.element_size()
    out = q.new_empty(q.shape)
    # At least float32 whatever q is: rounded to bf16 (8 bits), a log-sum-exp near 10 is off by up
    # to 0.03, and the backward's recomputed probabilities exp(s - lse) by 3%.
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    lse = q.new_empty(batch * num_windows, heads, window_area, dtype=lse_dtype) if need_lse else None
    chunks = bias_chunks(num_windows, bytes_per_window, q.device, bias_columns)
    windows_off_map = off_map_flags(off_map, on_cpu, windows_off_map)
    # Chunks outside, images inside: a chunk's bias (gathered per window for Focal-fast) serves
    # every image of the batch.
    for chunk in chunks:
        windows = chunk.windows
        chunk_index = take(index_by_window, windows).reshape(-1)
        mask = chunk_bias(bias, bias_columns, chunk).transpose(0, 1)
        # Interior windows have no off-map keys: the shared bias broadcasts, nothing to build.
        if not on_cpu or has_off_map_keys(chunk, windows_off_map):
            mask = mask + take(off_map, windows)[:, None, None, :]
        for b in range(batch):
            kv = source[b].index_select(0, chunk_index)
            kv = kv.view(-1, num_keys, 2, heads, head_dims)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            q_chunk = take(q, windows, offset=b * num_windows).transpose(1, 2)
            if on_cpu:
                out_chunk, lse_chunk = kernel('cpu_flash')(q_chunk, k, v, mask)
            elif not need_lse:
                out_chunk = kernel('sdpa')(q_chunk, k, v, mask)
                lse_chunk = None
            else:  # no public fused kernel returns the log-sum-exp with an additive bias on every GPU
                out_chunk, lse_chunk = kernel('with_lse')(q_chunk, k, v, mask)
            put(out, windows, out_chunk.transpose(1, 2), offset=b * num_windows)
            if need_lse:
                put(lse, windows, lse_chunk, offset=b * num_windows)
    return out, lse


def compiled_inputs(q, source, index, bias, off_map) -> tuple:
    """The compiled kernels' inputs from the attention's.

    Contiguous; the bias as (heads, keys, padded queries), zeros for the padded queries (the
    kernels' scores are keys-major).

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        bias (torch.Tensor): Position bias shared by the windows, (heads, w*w, keys).
        off_map (torch.Tensor): (nW, keys) logits.

    Returns:
        tuple[torch.Tensor, ...]: q, source, index, bias_t, off_map.
    """
    bias_t = F.pad(bias.transpose(1, 2), (0, compiled_kernels.padded_queries() - bias.shape[1])).contiguous()
    return q.contiguous(), source.contiguous(), index.contiguous(), bias_t, off_map.to(q.dtype).contiguous()


def compiled_forward(q, source, index, bias, off_map) -> torch.Tensor:
    """The ``'fused'`` path on the compiled kernels: the output alone.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
        index (torch.Tensor): (nW * keys,) rows of ``source``.
        bias (torch.Tensor): Position bias shared by the windows, (heads, w*w, keys).
        off_map (torch.Tensor): (nW, keys) logits.

    Returns:
        torch.Tensor: The output, (B*nW, w*w, heads, d).
    """
    return compiled_kernels.forward(*compiled_inputs(q, source, index, bias, off_map))[0]


class CompiledFocalAttention(torch.autograd.Function):
    """The ``'recompute'`` path on the compiled CPU kernels.

    As :class:`~.recompute_path.FocalAttentionCore`, the forward keeps q, the key source, the
    output and the log-sum-exp, and the backward recomputes the attention from them. Arguments
    as :func:`attend_fused`, with a shared (heads, w*w, keys) bias.
    """

    @staticmethod
    def forward(ctx, q, source, index, bias, off_map):
        """The output; q, the key source, the output and the log-sum-exp are kept for the backward.

        Args:
            ctx: The autograd context.
            q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
            source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
            index (torch.Tensor): (nW * keys,) rows of ``source``.
            bias (torch.Tensor): Position bias shared by the windows, (heads, w*w, keys).
            off_map (torch.Tensor): (nW, keys) logits.

        Returns:
            torch.Tensor: The output, (B*nW, w*w, heads, d).
        """
        inputs = compiled_inputs(q, source, index, bias, off_map)
        out, lse = compiled_kernels.forward(*inputs)
        ctx.save_for_backward(*inputs, out, lse)
        ctx.window_area = bias.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        """The gradients, the attention recomputed from what the forward kept.

        Args:
            ctx: The autograd context.
            grad_out (torch.Tensor): The output's gradient, (B*nW, w*w, heads, d).

        Returns:
            tuple: The gradients of q, source and bias (shapes as theirs); None for index and off_map.
        """
        q, source, index, bias_t, off_map, out, lse = ctx.saved_tensors
        # A chunk of windows' key and value gradients (keys x 2 x heads x d floats a window) is
        # gathered before it is added to the source's: as many windows as chunk_bytes() holds.
        window_bytes = off_map.shape[1] * 2 * source.shape[3] * source.shape[4] * source.element_size()
        chunk_windows = max(torch.get_num_threads(), chunk_bytes() // window_bytes)
        grad_q, grad_source, grad_bias_t = compiled_kernels.backward(
            q, source, index, bias_t, off_map, out, lse, grad_out.contiguous(), chunk_windows)
        return grad_q, grad_source, None, grad_bias_t[:, :, :ctx.window_area].transpose(1, 2), None
