"""The ``'recompute'`` path on PyTorch's kernels: the fused forward, and a backward that recomputes
the attention from the saved queries and key source instead of keeping it.

Shapes as :mod:`.plain_paths`.
"""
import torch

from .attention_switch import uses_cpu_kernels
from .chunking import (
    add_bias_grad,
    as_bias_columns,
    bias_chunks,
    chunk_bias,
    has_off_map_keys,
    off_map_flags,
    put,
    take,
)
from .fused_paths import attend_fused


class FocalAttentionCore(torch.autograd.Function):
    """Fused forward; the backward recomputes the attention from the saved queries and key source.

    Saves only q, the key/value source, the output and the log-sum-exp: neither the gathered keys
    and values (about 9x the map at stage 1) nor the attention matrix stay in memory between the
    passes. Gradients are the exact ones of softmax(q k^T + bias + off_map) v.

    ``FocalAttentionCore.apply(q, source, index, bias, off_map, bias_columns=None)``: arguments
    as :func:`~.fused_paths.attend_fused`; returns the output (B*nW, w*w, heads, d).
    """

    @staticmethod
    def forward(ctx, q, source, index, bias, off_map, bias_columns=None):
        """The fused forward; q, the key source, the output and the log-sum-exp are kept.

        Args:
            ctx: The autograd context.
            q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
            source (torch.Tensor): Keys and values, (B, S, 2, heads, d).
            index (torch.Tensor): (nW * keys,) rows of ``source``.
            bias (torch.Tensor): Position bias, as :func:`~.chunking.chunk_bias` takes it.
            off_map (torch.Tensor): (nW, keys) logits.
            bias_columns (BiasColumns, optional): As :func:`~.chunking.chunk_bias` takes them.
                Defaults to None.

        Returns:
            torch.Tensor: The output, (B*nW, w*w, heads, d).
        """
        # Which windows have off-map keys: found once, for the forward and the backward.
        windows_off_map = off_map_flags(off_map, uses_cpu_kernels(q.device))
        out, lse = attend_fused(q, source, index, bias, off_map, bias_columns=bias_columns,
                                windows_off_map=windows_off_map)
        ctx.save_for_backward(q, source, index, bias, off_map, out, lse)
        ctx.bias_columns = bias_columns
        ctx.windows_off_map = windows_off_map
        return out

    @staticmethod
    def backward(ctx, grad_out):
        """The gradients, the attention recomputed chunk by chunk in float32.

        Args:
            ctx: The autograd context.
            grad_out (torch.Tensor): The output's gradient, (B*nW, w*w, heads, d).

        Returns:
            tuple: The gradients of q, source and bias (shapes and dtypes as theirs); None for index,
            off_map and bias_columns.
        """
        # The recomputation runs in float32 and writes products into float32 buffers (out=):
        # autocast, where backward() is called inside it, must not turn them into fp16/bf16.
        with torch.autocast(grad_out.device.type, enabled=False):
            return FocalAttentionCore._recompute_gradients(ctx, grad_out)

    @staticmethod
    def _recompute_gradients(ctx, grad_out):
        q, source, index, bias, off_map, out, lse = ctx.saved_tensors
        bias_columns = as_bias_columns(ctx.bias_columns)
        # Under autocast the inputs may be fp16/bf16: accumulate the recomputation in float32.
        dtype = torch.promote_types(q.dtype, torch.float32)
        q_dtype, source_dtype = q.dtype, source.dtype
        q, source, out, grad_out = q.to(dtype), source.to(dtype), out.to(dtype), grad_out.to(dtype)
        bias, off_map, lse = bias.to(dtype), off_map.to(dtype), lse.to(dtype)
        num_windows, num_keys = off_map.shape
        batch, _, _, heads, head_dims = source.shape
        window_area = q.shape[1]
        index_by_window = index.view(num_windows, num_keys)

        def by_head(t, windows, b):
            """Image ``b``'s rows of some windows, heads first.

            Args:
                t (torch.Tensor): Shape (B*nW, w*w, heads, d).
                windows (slice | torch.Tensor): The windows of the chunk.
                b (int): The image.

            Returns:
                torch.Tensor: Shape (heads, windows, w*w, d).
            """
            # Rows taken before the permutation: index_select of a permuted view copies it whole.
            return take(t, windows, offset=b * num_windows).permute(2, 0, 1, 3)

        # Keys are gathered, and their gradients added back, as whole rows of the source (2 * heads
        # * d contiguous values each: PyTorch's fast paths for index_select and index_add_, about
        # 1.4x and 1.6x faster than along a heads-outside copy), and reordered per chunk.
        source = source.contiguous()  # (B, S, 2, heads, d)
        grad_source = torch.zeros_like(source)
        grad_q = q.new_empty(batch, heads, num_windows, window_area, head_dims)
        grad_bias = torch.zeros_like(bias)
        bytes_per_window = heads * num_keys * (2 * head_dims + 2 * window_area) * q.element_size()
        on_cpu = uses_cpu_kernels(q.device)
        # With per-window biases from a table, the images of the batch share them: sum the images'
        # score gradients, then add the sum to the table once per chunk.
        sum_over_images = bias_columns is not None and batch > 1
        windows_off_map = off_map_flags(off_map, on_cpu, ctx.windows_off_map)
        # sum_j p_ij dP_ij = sum_c dO_ic O_ic for every query, all windows at once: (B*nW, w*w, heads)
        delta_all = torch.linalg.vecdot(grad_out, out)
        for chunk in bias_chunks(num_windows, bytes_per_window, q.device, bias_columns):
            windows, count = chunk.windows, chunk.size
            rows = heads * count  # one small GEMM per (head, window) below
            chunk_index = take(index_by_window, windows).reshape(-1)
            bias_and_off_map = chunk_bias(bias, bias_columns, chunk)  # (heads, 1 or windows, w*w, keys)
            if not on_cpu or has_off_map_keys(chunk, windows_off_map):
                bias_and_off_map = bias_and_off_map + take(off_map, windows)[None, :, None, :]
            grad_scores_sum = None
            for b in range(batch):
                # Heads outside the windows, so every product below is one batched GEMM: (2, rows, keys, d)
                kv = source[b].index_select(0, chunk_index).view(count, num_keys, 2, heads, head_dims)
                kv = kv.permute(2, 3, 0, 1, 4).reshape(2, rows, num_keys, head_dims)
                q_chunk = by_head(q, windows, b).reshape(rows, window_area, head_dims)
                grad_by_window = by_head(grad_out, windows, b)
                grad_chunk = grad_by_window.reshape(rows, window_area, head_dims)
                delta = take(delta_all, windows, offset=b * num_windows).permute(2, 0, 1).unsqueeze(-1)
                probs = q.new_empty(heads, count, window_area, num_keys)
                chunk_lse = take(lse, windows, offset=b * num_windows).transpose(0, 1)  # (heads, windows, w*w)
                torch.sub(bias_and_off_map, chunk_lse[..., None], out=probs)
                probs = probs.view(rows, window_area, num_keys).baddbmm_(q_chunk, kv[0].transpose(1, 2)).exp_()
                grad_scores = torch.bmm(grad_chunk, kv[1].transpose(1, 2))
                torch.bmm(probs.transpose(1, 2), grad_chunk, out=kv[1])  # values are spent: grad_v in place
                grad_scores.view(heads, count, window_area, num_keys).sub_(delta)
                grad_scores.mul_(probs)
                del probs
                if not sum_over_images:
                    add_bias_grad(grad_bias, grad_scores.view(heads, count, window_area, num_keys), bias_columns,
                                   chunk)
                elif grad_scores_sum is None:
                    grad_scores_sum = grad_scores.clone()
                else:
                    grad_scores_sum += grad_scores
                put(grad_q[b], windows, torch.bmm(grad_scores, kv[0]).view(heads, count, window_area, head_dims),
                     dim=1)
                torch.bmm(grad_scores.transpose(1, 2), q_chunk, out=kv[0])  # keys are spent: grad_k in place
                del grad_scores
                grad_rows = kv.view(2, heads, count, num_keys, head_dims).permute(2, 3, 0, 1, 4)
                grad_source[b].view(-1, 2 * heads * head_dims).index_add_(
                    0, chunk_index, grad_rows.reshape(count * num_keys, 2 * heads * head_dims))
            if sum_over_images:
                add_bias_grad(grad_bias, grad_scores_sum.view(heads, count, window_area, num_keys), bias_columns,
                               chunk)
                del grad_scores_sum
        grad_q = grad_q.permute(0, 2, 3, 1, 4)  # (B, nW, w*w, heads, d)
        return (grad_q.reshape(q.shape).to(q_dtype), grad_source.to(source_dtype), None,
                grad_bias, None, None)
