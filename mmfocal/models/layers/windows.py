"""Windows of a (B, H, W, C) map, as both focal attentions cut and join them.

One job: moving tokens between the map layout and the window layout. :func:`window_queries_and_keys`
projects a map into queries by window and a key source; :func:`merge_windows` puts the attention
output by window back into the map; :func:`crop_centre` and :func:`centre_to` cut or pad a map
symmetrically (the pooling of windows). All but :func:`centre_to` (Focal-fast, which traces at a
fixed size) take symbolic sizes while tracing.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def window_queries_and_keys(x: torch.Tensor, pooled: Sequence[torch.Tensor], qkv: nn.Linear, scale: float,
                            num_heads: int, window_size: int) -> Tuple[torch.Tensor, list]:
    """Queries by window and the parts of the key source, from one qkv projection.

    Args:
        x (torch.Tensor): The padded map, (B, Hp, Wp, C), Hp and Wp multiples of ``window_size``.
        pooled (Sequence[torch.Tensor]): Pooled maps, (B, h, w, C) each.
        qkv (nn.Linear): The projection, C -> 3C.
        scale (float): The query scale.
        num_heads (int): Heads; C must divide by it.
        window_size (int): The query window w.

    Returns:
        tuple[torch.Tensor, list[torch.Tensor]]: q (B*nW, w*w, heads, d), scaled, its windows
        row-major like the official partition; and the keys and values, (B, n, 2, heads, d)
        each: the map's, then each pooled map's.
    """
    B, hp, wp, _ = x.shape
    C = qkv.in_features  # a plain int also while tracing, where x.shape gives traced sizes
    w, head_dims = window_size, C // num_heads
    n_wh, n_ww = hp // w, wp // w
    # Fold the query scale into the projection instead of scaling a full query tensor (built, not
    # written in place: a tracer may keep the buffer and drop the write).
    scales = torch.tensor([[scale], [1.], [1.]], dtype=x.dtype, device=x.device)
    weight = (qkv.weight.view(3, C, C) * scales.view(3, 1, 1)).view(3 * C, C)
    qkv_bias = None if qkv.bias is None else (qkv.bias.view(3, C) * scales).view(-1)
    projected = F.linear(x, weight, qkv_bias).view(B, n_wh, w, n_ww, w, 3, num_heads, head_dims)
    # One split, not an index and a slice: their backward would fill two zero tensors of the
    # projection's size and add them; the split's backward is one concatenation.
    q, map_kv = projected.split([1, 2], dim=5)
    q = q.permute(0, 1, 3, 2, 4, 5, 6, 7).reshape(B * n_wh * n_ww, w * w, num_heads, head_dims)
    sources = [map_kv.reshape(B, hp * wp, 2, num_heads, head_dims)]
    for level in pooled:
        kv = F.linear(level, qkv.weight[C:], None if qkv.bias is None else qkv.bias[C:])
        sources.append(kv.reshape(B, -1, 2, num_heads, head_dims))
    return q, sources


def merge_windows(out: torch.Tensor, batch: int, height: int, width: int, window_size: int,
                  dims: int) -> torch.Tensor:
    """The attention output by window back to the padded map.

    A copy, then a view: reshape of the permuted windows would first check whether a view is
    possible (it is when a side has one window), a guard on the sizes that makes torch.compile
    recompile. The view takes the map's own sizes: under dynamic shapes ``(Hp // w) * w`` is not
    known to equal ``Hp``, and asking would be a guard too.

    Args:
        out (torch.Tensor): (B*nW, w*w, heads, d).
        batch (int): B.
        height (int): Hp, the padded map's height, a multiple of the window.
        width (int): Wp, likewise.
        window_size (int): The window w.
        dims (int): Channels C (heads * d).

    Returns:
        torch.Tensor: (B, Hp, Wp, C).
    """
    w = window_size
    out = out.reshape(batch, height // w, width // w, w, w, dims).permute(0, 1, 3, 2, 4, 5)
    return out.clone(memory_format=torch.contiguous_format).view(batch, height, width, dims)


def crop_centre(x: torch.Tensor, rows, cols) -> torch.Tensor:
    """Crop a map symmetrically (an odd extra row or column off the end).

    Pooling only ever crops: ``Hp / w * 2**k`` sub-windows of ``floor(w / 2**k)`` tokens never
    exceed the padded map. No branch on the sizes, so symbolic sizes trace to one graph.

    Args:
        x (torch.Tensor): (B, H, W, C).
        rows (int): Rows kept, at most H (symbolic while tracing).
        cols (int): Columns kept, at most W.

    Returns:
        torch.Tensor: (B, rows, cols, C), a view.
    """
    top, left = (x.shape[1] - rows) // 2, (x.shape[2] - cols) // 2
    # narrow, not slicing: its result has exactly ``rows`` rows, also for symbolic sizes
    return x.narrow(1, top, rows).narrow(2, left, cols)


def centre_to(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Crop or zero-pad a map symmetrically (an odd extra row or column at the end).

    Args:
        x (torch.Tensor): (B, H, W, C).
        rows (int): Rows of the result.
        cols (int): Columns of the result.

    Returns:
        torch.Tensor: (B, rows, cols, C).
    """
    H, W = x.shape[1:3]
    pad_rows, pad_cols = max(rows - H, 0), max(cols - W, 0)
    if pad_rows or pad_cols:
        top, left = pad_rows // 2, pad_cols // 2
        x = F.pad(x, (0, 0, left, pad_cols - left, top, pad_rows - top))
    return crop_centre(x, rows, cols)
