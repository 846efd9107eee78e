"""Focal-fast attention, pure PyTorch: the authors' faster Focal Transformer.

Computes the function of ``classification/focal_transformer_v2.py`` in microsoft/Focal-Transformer
(their "Focal-fast", configs ``focalv2_*_useconv_patch4_window7_224``) and keeps its parameter
names (``attn.coord2rpb_all.{level}``), so the published checkpoints load without renaming.

Every query of a window attends to the same keys, in two levels:

0. the ``topk`` tokens of the whole stage map nearest (Euclidean distance, in tokens) to the
   window centre;
1. the ``topk`` nearest pooled tokens, one pooled token per window (all of them when there are
   fewer), located at their window's centre.

The position bias of a (query, key) pair is a small MLP per level (Linear(2, head_dim), ReLU,
Linear(head_dim, heads)) of the query-to-key offset in tokens. No masks, no rolled keys.

Which of several equidistant tokens are kept is decided as the official model decides it: by
``torch.topk`` on the negated distances from each window centre to every token of the map, row by
row, on the CPU (the official model builds these indices once, from its image size; we build them
for the actual map and cache them per map size in :func:`fast_key_layout`).

The keys of every window are fetched by one ``index_select`` from a key source (the map's tokens,
then the pooled tokens), as for the paper's model, and the attention runs in the same
recomputing kernel (:class:`~.focal_attention._FocalAttentionCore`). The bias differs per window,
but only through the key offsets. Each level's MLP runs once per distinct query-minus-key offset
(level 0's offsets recur from query to query: about 25x fewer than (query, key) pairs), giving a
(heads, w*w, U) table over the U distinct key positions; a window's bias is a gather of the
table's columns, made per chunk of windows and never stored for the whole map. Windows with
identical columns (some interior windows; which of several equidistant tokens topk keeps depends
on the window's place, so fewer share than the geometry suggests) go through the kernel as groups
that take one broadcast bias and sum their bias gradient before adding it to the table, and the
images of a batch share each chunk's gathered bias and bias-gradient scatter.
"""
import functools
import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .focal_attention import (BiasColumns, FocalTransformerBlock, _centre_to, attend, merge_windows, uses_standard_ops,
                              window_queries_and_keys)

# Rows of the distance matrix handed to torch.topk at once: bounds the layout's temporaries.
_DISTANCE_CHUNK_ELEMENTS = 2**22


def nearest_tokens(centre_rows: torch.Tensor, centre_cols: torch.Tensor, height: int, width: int,
                   topk: int) -> torch.Tensor:
    """(n, min(topk, height*width)) row-major indices of the grid tokens nearest to each centre.

    The official rule: ``torch.topk`` of the negated distances from each centre to the whole row
    of ``height * width`` tokens, on the CPU, whose tie-breaking among equidistant tokens the
    official indices carry. The official model ranks float32 ``sqrt(dr**2 + dc**2)``; we rank the
    exact integer ``dr**2 + dc**2`` instead, which orders and ties every pair of tokens the same
    way (square roots of distinct integers below 2**31 are distinct in float32), so topk makes the
    same comparisons and picks the same tokens, without a square root over the map. Rows go in
    chunks; topk treats each row on its own, so chunking does not change the result.
    """
    k = min(topk, height * width)
    rows = torch.arange(height, dtype=torch.int32)
    cols = torch.arange(width, dtype=torch.int32)
    centre_rows, centre_cols = centre_rows.to(torch.int32), centre_cols.to(torch.int32)
    step = max(1, _DISTANCE_CHUNK_ELEMENTS // (height * width))
    picks = []
    for start in range(0, len(centre_rows), step):
        d_rows = (centre_rows[start:start + step, None] - rows)**2  # (n, H)
        d_cols = (centre_cols[start:start + step, None] - cols)**2  # (n, W)
        negated = (d_rows.neg()[:, :, None] - d_cols[:, None, :]).view(len(d_rows), -1)
        picks.append(torch.topk(negated, k, dim=1).indices)
    return torch.cat(picks)


class FastKeyLayout(NamedTuple):
    """Where the keys of every window come from, and which bias column each key uses.

    index: (nW * keys,) into the key source: the padded map's tokens row-major (``Hp * Wp``),
        then the pooled tokens row-major (``nWh * nWw``).
    off_map: (nW, keys) zeros (Focal-fast has no masked keys; the kernel's argument).
    bias_columns: (nW, keys) into the concatenated bias tables of the levels.
    offsets: per level, (U_l, 2) the distinct key positions relative to the window's top-left
        token, in tokens (a pooled token sits at its window's centre).
    keys_per_level: (level-0 keys, level-1 keys).
    differences: per level, (V_l, 2) the distinct query-minus-key offsets over the window's
        ``w*w`` queries and the level's ``U_l`` key positions: the inputs of the level's bias MLP.
    difference_index: per level, (w*w * U_l,) the row of ``differences`` of each (query, key
        position) pair, query-major. Level 0's ``w*w * U_l`` pairs have about 25x fewer distinct
        offsets (nearby tokens: the same offsets recur from query to query); level 1's do not
        (pooled tokens sit a window apart).
    window_order: None, or the (nW,) window numbers in the order the CPU kernel takes them: the
        windows of each shared group, then the others (row-major).
    shared_groups: (start, stop) ranges of positions in ``window_order``: groups of at least
        MIN_SHARED_GROUP windows with identical rows of ``bias_columns``, i.e. the same key offsets.
        Only windows away from the map's borders can share, and fewer than the map's geometry
        suggests: which of several equidistant tokens topk keeps depends on where the window is,
        so interior windows fall into several groups (at 800x1344 input 62 groups hold 922 of
        stage 1's 1392 windows and 11 groups 51 of stage 2's 360; at 512x512, 46 of stage 1's 361
        windows are in groups, none later).
    """
    index: torch.Tensor
    off_map: torch.Tensor
    bias_columns: torch.Tensor
    offsets: Tuple[torch.Tensor, ...]
    keys_per_level: Tuple[int, ...]
    differences: Tuple[torch.Tensor, ...]
    difference_index: Tuple[torch.Tensor, ...]
    window_order: Optional[torch.Tensor] = None
    shared_groups: Tuple[Tuple[int, int], ...] = ()

    def kernel_columns(self) -> BiasColumns:
        """The bias columns, window order and groups, as the attention kernel takes them."""
        return BiasColumns(self.bias_columns, self.window_order, self.shared_groups)


def unique_pairs(pairs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(pairs, dim=0, return_inverse=True)`` for (N, 2) integer pairs, through a 1-d
    unique of one int64 per pair: the same rows, order and inverse (the encoding keeps the
    lexicographic order), several times faster than the row-wise unique on the CPU."""
    low = pairs.amin(0)
    shifted = pairs.long() - low
    span = shifted[:, 1].amax() + 1
    unique, inverse = torch.unique(shifted[:, 0] * span + shifted[:, 1], return_inverse=True)
    return torch.stack([unique // span, unique % span], 1).to(pairs.dtype) + low, inverse


def distinct_differences(window_size: int, key_positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The distinct query-minus-key offsets of a window's queries and ``key_positions`` (U, 2), and
    where each (query, key) pair finds its offset; see :class:`FastKeyLayout`."""
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij')
    queries = torch.stack([rows, cols], -1).view(-1, 1, 2)
    pairs = (queries - key_positions).view(-1, 2)  # (w*w * U, 2), query-major
    # Always the gather, also where every pair differs (level 1): under torch.compile the number of
    # distinct rows is data dependent, and a branch on it is a guard Dynamo cannot make.
    return unique_pairs(pairs)


# Smaller groups stay with the other windows: a chunk of its own costs a dozen more kernel calls,
# more than gathering a few windows' biases saves.
MIN_SHARED_GROUP = 4


def shared_groups(columns: torch.Tensor, min_size: int = MIN_SHARED_GROUP):
    """Group the windows (rows of ``columns`` (nW, keys)) with identical columns.

    Returns (order, groups): the window numbers, first each group of at least ``min_size``
    identical rows (groups in order of their first window, windows row-major within each), then
    the other windows row-major; and the groups as (start, stop) ranges of positions in
    ``order``. (None, ()) when there is no such group.
    """
    _, group_of, sizes = torch.unique(columns, dim=0, return_inverse=True, return_counts=True)
    group_of, sizes = group_of.tolist(), sizes.tolist()
    first_window = {}
    for n, group in enumerate(group_of):
        first_window.setdefault(group, n)
    grouped = sorted((n for n, group in enumerate(group_of) if sizes[group] >= min_size),
                     key=lambda n: (first_window[group_of[n]], n))
    if not grouped:
        return None, ()
    others = [n for n, group in enumerate(group_of) if sizes[group] < min_size]
    starts = [i for i, n in enumerate(grouped) if i == 0 or group_of[n] != group_of[grouped[i - 1]]]
    groups = tuple(zip(starts, starts[1:] + [len(grouped)]))
    return torch.tensor(grouped + others), groups


@functools.lru_cache(maxsize=256)  # bounded: multi-scale training sees many map sizes
def fast_key_layout(window_size: int, topk: int, with_pooled: bool, height: int, width: int,
                    device: torch.device, with_groups: bool = True) -> FastKeyLayout:
    """The :class:`FastKeyLayout` of a ``height`` x ``width`` map in ``window_size`` windows.

    Windows tile the map padded at the bottom/right to window multiples; level-0 keys are tokens
    of the actual map only (never padding), nearest to each window's centre
    ``(i * w + w // 2, j * w + w // 2)``; level-1 keys are pooled tokens, nearest in window units.
    Within a window the keys are sorted by bias column (the order of keys does not change the
    attention), so windows that see the same offsets have identical column rows. Without
    ``with_groups`` the layout has no window order and no groups (the standard-ops path of export
    and compilation uses neither, and Dynamo cannot trace the grouping's ``tolist``).
    """
    w = window_size
    n_wh, n_ww = -(-height // w), -(-width // w)
    hp, wp = n_wh * w, n_ww * w
    win_rows = torch.arange(n_wh).repeat_interleave(n_ww)
    win_cols = torch.arange(n_ww).repeat(n_wh)

    nearest = nearest_tokens(win_rows * w + w // 2, win_cols * w + w // 2, height, width, topk)
    key_rows, key_cols = nearest // width, nearest % width
    sources = [key_rows * wp + key_cols]
    relative = [torch.stack([key_rows - win_rows[:, None] * w, key_cols - win_cols[:, None] * w], -1)]
    if with_pooled:
        nearest = nearest_tokens(win_rows, win_cols, n_wh, n_ww, topk)
        pooled_rows, pooled_cols = nearest // n_ww, nearest % n_ww
        sources.append(hp * wp + nearest)
        relative.append(torch.stack([(pooled_rows - win_rows[:, None]) * w + w // 2,
                                     (pooled_cols - win_cols[:, None]) * w + w // 2], -1))

    columns, offsets, first_column = [], [], 0
    for rel in relative:
        unique, inverse = unique_pairs(rel.reshape(-1, 2))
        columns.append(inverse.view(rel.shape[:2]) + first_column)
        offsets.append(unique)
        first_column += len(unique)
    columns, source = torch.cat(columns, 1), torch.cat(sources, 1)
    columns, order = columns.sort(1)
    source = source.gather(1, order)
    differences = [distinct_differences(w, o) for o in offsets]
    order, groups = shared_groups(columns) if with_groups else (None, ())
    return FastKeyLayout(index=source.reshape(-1).to(device), off_map=torch.zeros(columns.shape, device=device),
                         bias_columns=columns.to(device), offsets=tuple(o.to(device) for o in offsets),
                         keys_per_level=tuple(rel.shape[1] for rel in relative),
                         differences=tuple(d.to(device) for d, _ in differences),
                         difference_index=tuple(i.to(device) for _, i in differences),
                         window_order=None if order is None else order.to(device), shared_groups=groups)


class FocalFastAttention(nn.Module):
    """Each window's queries attend to the ``topk`` map tokens and ``topk`` pooled tokens nearest
    to the window, with MLP position biases (the official ``WindowAttention`` of Focal-fast).

    Args:
        dims: channels C. num_heads: heads; C must divide by it. window_size: query window w.
        focal_level: 1 (map tokens only) or 2 (and one pooled level). topk: keys per level.

    Shapes: ``forward(x, pooled, size)`` takes the padded, normed map ``x`` (B, Hp, Wp, C) with
    Hp, Wp multiples of w, ``pooled`` an empty list or [(B, Hp / w, Wp / w, C)], and ``size`` the
    (H, W) of the map before padding; returns (B, Hp, Wp, C). Padded tokens are queries whose
    outputs the block drops; they are never keys.

    Analysis: with ``record_attention = True`` the next forward passes (through the plain autograd
    path) keep in ``self.recorded``: ``weights`` (B, nW, heads, w*w, keys) after softmax,
    ``index`` (nW, keys) into the key source (``< Hp * Wp``: the padded map's token, row-major;
    else ``Hp * Wp +`` the pooled token, row-major over the window grid), ``off_map`` (zeros),
    ``windows`` (nWh, nWw), ``keys_per_level`` and ``size`` (H, W).
    """

    def __init__(self, dims: int, num_heads: int, window_size: int = 7, focal_level: int = 2, topk: int = 128,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if focal_level not in (1, 2):
            raise ValueError(f'Focal-fast supports focal levels 1 or 2, got {focal_level}')
        if topk < 1:
            raise ValueError(f'focal_topk must be positive, got {topk}')
        self.dims, self.num_heads = dims, num_heads
        self.window_size, self.focal_level, self.topk = window_size, focal_level, topk
        head_dims = dims // num_heads
        self.scale = qk_scale or head_dims**-0.5
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dims, dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.coord2rpb_all = nn.ModuleList(
            nn.Sequential(nn.Linear(2, head_dims), nn.ReLU(inplace=True), nn.Linear(head_dims, num_heads))
            for _ in range(focal_level))
        self.record_attention = False
        self.recorded = None

    def bias_table(self, layout: FastKeyLayout, dtype: torch.dtype) -> torch.Tensor:
        """(heads, w*w, U): the MLP bias of every query token against every distinct key position.

        Each level's MLP runs once per distinct query-minus-key offset (``layout.differences``),
        with features along the rows, so both layers are plain matrix products that leave the
        (heads, offsets) result in the layout the kernel gathers from; the table is then a gather
        of its columns."""
        heads, area = self.num_heads, self.window_size**2
        tables = []
        for mlp, differences, where in zip(self.coord2rpb_all, layout.differences, layout.difference_index):
            hidden_layer, activation, output_layer = mlp
            hidden = activation(torch.addmm(hidden_layer.bias[:, None], hidden_layer.weight,
                                            differences.t().to(dtype)))  # (hidden, V_l)
            values = torch.addmm(output_layer.bias[:, None], output_layer.weight, hidden)  # (heads, V_l)
            tables.append(values.index_select(1, where).view(heads, area, -1))
        return torch.cat(tables, 2)

    def forward(self, x: torch.Tensor, pooled: Sequence[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
        B, hp, wp, C = x.shape
        w, heads = self.window_size, self.num_heads
        n_wh, n_ww = hp // w, wp // w
        standard_ops = uses_standard_ops(x)
        # int(): while tracing the sizes may be traced values; the layout is a constant of the size
        layout = fast_key_layout(w, self.topk, bool(pooled), int(size[0]), int(size[1]), x.device,
                                 with_groups=not standard_ops)
        bias = self.bias_table(layout, x.dtype)

        q, sources = window_queries_and_keys(x, pooled, self.qkv, self.scale, heads, w)
        source = torch.cat(sources, 1)  # (B, S, 2, heads, d)

        # Export and compilation run at a fixed size: the key sets are constants of that size
        # (mmfocal.deployment refuses a dynamic Focal-fast graph).
        out, weights = attend(q, source, layout.index, bias, layout.off_map, self.attn_drop, self.training,
                              standard_ops, record=self.record_attention, bias_columns=layout.kernel_columns())
        if weights is not None:
            self.recorded = dict(weights=weights.detach().view(B, n_wh * n_ww, heads, w * w, -1),
                                 index=layout.index.view(n_wh * n_ww, -1), off_map=layout.off_map,
                                 windows=(n_wh, n_ww), keys_per_level=layout.keys_per_level, size=tuple(size))
        return self.proj_drop(self.proj(merge_windows(out, B, hp, wp, w, C)))

    def extra_repr(self) -> str:
        return (f'dims={self.dims}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'focal_level={self.focal_level}, topk={self.topk}')


class FocalFastTransformerBlock(FocalTransformerBlock):
    """The paper block's norms, pooling, MLP and residuals around :class:`FocalFastAttention`.

    Shapes: (B, H, W, C) -> (B, H, W, C) for any H, W. As in the official model, the pooled tokens
    come from the unpadded normed map, centre-cropped or zero-padded to window multiples; the
    queries are that map zero-padded at the bottom/right to window multiples. The window never
    shrinks (the official model shrinks it to a map side smaller than the window, which changes
    the pooling weights' shape): such a map is padded to one window. Padded tokens are queries
    whose outputs are dropped, never keys; they enter the pooled tokens as zeros, as the official
    centre padding does.
    """

    def __init__(self, dims: int, num_heads: int, window_size: int = 7, focal_level: int = 2, topk: int = 128,
                 pool_method: str = 'fc', mlp_ratio: float = 4., qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0.):
        if focal_level not in (1, 2):
            raise ValueError(f'Focal-fast supports focal levels 1 or 2 (the official model indexes one '
                             f'pooled level), got {focal_level}')
        super().__init__(dims, num_heads, window_size, expand_size=0, focal_window=1,
                         focal_level=focal_level, pool_method=pool_method, mlp_ratio=mlp_ratio,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                         drop_path=drop_path)
        # The same slot (and state-dict position) as the paper block's attention.
        levels = focal_level if pool_method != 'none' else 1
        self.attn = FocalFastAttention(dims, num_heads, window_size, levels, topk, qkv_bias, qk_scale, attn_drop, drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w = self.window_size
        shortcut = x
        x = self.norm1(x)
        rows, cols = math.ceil(H / w) * w, math.ceil(W / w) * w
        pooled = [self._pool(_centre_to(x, rows, cols), 0)] if self.pooled_window_sizes else []
        if (rows, cols) != (H, W):
            x = F.pad(x, (0, 0, 0, cols - W, 0, rows - H))
        x = self.attn(x, pooled, (H, W))[:, :H, :W]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))
