"""Focal self-attention (Yang et al., 2021), pure PyTorch.

The bottom layer of mmfocal: no OpenMMLab import. It computes the same function as the official
v1 model (microsoft/Focal-Transformer, ``classification/focal_transformer.py``) and keeps its
parameter names, so the published checkpoints load without renaming.

What one query window attends to, in key order (window size ``w``, expand size ``e``):

1. the window's own ``w*w`` tokens;
2. the *rolled* neighbours: the official model rolls the key map by ``(+-e, +-e)`` four times and
   keeps, from each roll, the ``w*w - (w-e)**2`` slots that fall outside the window. That gives
   ``4 * (w*w - (w-e)**2)`` keys (132 for w=7, e=3): the ``(w+2e)**2 - w*w`` ring around the window
   plus 12 duplicates. Rolls wrap around the (padded) map, so border windows see the far side.
   Each slot has its own learned bias (``relative_position_bias_table_to_neighbors``);
3. for each pooled level ``k``: the map cut into sub-windows of ``floor(w / 2**k)`` tokens, each
   pooled to one token, and the ``(focal_window + 2**k - 1)**2`` pooled tokens around the query
   window. Off-map positions are zero keys and values whose logits get -100 added.

Instead of the official rolls, partitions, index copies and in-place masked adds, every key of
every window is fetched by a precomputed ``index_select`` from a single source tensor (map keys,
pooled keys and one zero row), and all biases and masks are added in one broadcast add, a chunk
of windows at a time.
"""
import functools
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

POOLING_METHODS = ('fc', 'conv', 'mean', 'max', 'none')
OFF_MAP_LOGIT = -100.0  # the official model's mask value; kept so the outputs match it


def relative_position_index(query_size: Tuple[int, int], key_size: Tuple[int, int]) -> torch.Tensor:
    """Index into a ``(qh + kh - 1) * (qw + kw - 1)`` bias table for every (query, key) pair.

    Returns a ``(qh*qw, kh*kw)`` long tensor; query and key grids are both anchored at (0, 0).
    """
    (qh, qw), (kh, kw) = query_size, key_size
    q_rows, q_cols = torch.meshgrid(torch.arange(qh), torch.arange(qw), indexing='ij')
    k_rows, k_cols = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing='ij')
    d_rows = q_rows.reshape(-1, 1) - k_rows.reshape(1, -1) + kh - 1
    d_cols = q_cols.reshape(-1, 1) - k_cols.reshape(1, -1) + kw - 1
    return d_rows * (qw + kw - 1) + d_cols


def rolled_neighbour_offsets(window_size: int, expand_size: int) -> torch.Tensor:
    """``(n, 4)`` rows of (row in window, col in window, row offset, col offset), one per rolled key.

    Order as in the official model: rolls by (-e,-e), (-e,+e), (+e,-e), (+e,+e); within each roll
    the window slots, row-major, that the roll fills from outside the window. Built in Python, so
    it is a constant also while tracing (no data-dependent boolean indexing).
    """
    w, e = window_size, expand_size
    # A roll by (-dy, -dx) puts the token at (r + dy, c + dx) into slot (r, c); it fills from
    # outside the window the slots within e of the edges it moves away from.
    rolls = (((e, e), lambda r, c: r >= w - e or c >= w - e), ((e, -e), lambda r, c: r >= w - e or c < e),
             ((-e, e), lambda r, c: r < e or c >= w - e), ((-e, -e), lambda r, c: r < e or c < e))
    rows = [(r, c, dy, dx) for (dy, dx), outside in rolls for r in range(w) for c in range(w) if outside(r, c)]
    return torch.tensor(rows, dtype=torch.long).view(-1, 4)


def num_rolled_keys(window_size: int, expand_size: int) -> int:
    return 4 * (window_size**2 - (window_size - expand_size)**2) if expand_size > 0 else 0


def compute_key_layout(window_size: int, expand_size: int, focal_window: int, num_pooled_levels: int, n_wh,
                       n_ww, with_rolled: bool, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where every key of every window comes from, for an ``n_wh`` x ``n_ww`` grid of windows.

    Returns ``index`` (num_windows * num_keys,) into the key source (the map's tokens row-major,
    then each pooled level's tokens row-major, then one zero token) and ``off_map``
    (num_windows, num_keys) float32, the logit added to each key: -100 for pooled keys beyond the
    map (the zero token), 0 elsewhere.

    Tensor ops only, so ``n_wh`` and ``n_ww`` may be symbolic (torch.export's SymInts, the ONNX
    tracer's 0-d tensors) and the exported graph computes the layout for each input size.
    """
    w = window_size
    hp, wp = n_wh * w, n_ww * w
    win_rows = torch.arange(n_wh).view(-1, 1, 1, 1) * w
    win_cols = torch.arange(n_ww).view(1, -1, 1, 1) * w

    in_rows, in_cols = torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij')
    slot_rows, slot_cols = [in_rows.reshape(-1)], [in_cols.reshape(-1)]
    if with_rolled and expand_size > 0:
        offsets = rolled_neighbour_offsets(w, expand_size)
        slot_rows.append(offsets[:, 0] + offsets[:, 2])
        slot_cols.append(offsets[:, 1] + offsets[:, 3])
    slot_rows = torch.cat(slot_rows).view(1, 1, 1, -1)
    slot_cols = torch.cat(slot_cols).view(1, 1, 1, -1)
    map_index = _wrap(win_rows + slot_rows, hp) * wp + _wrap(win_cols + slot_cols, wp)
    parts = [map_index.reshape(n_wh * n_ww, -1)]
    off_map = [torch.zeros_like(parts[0], dtype=torch.bool)]

    levels = []
    for k in range(num_pooled_levels):
        stride = 2**k
        ph, pw = n_wh * stride, n_ww * stride
        kernel = 2 * (focal_window // 2) + 2**k + (2**k - 1)
        first = stride - 1  # the official model keeps the kernel's [2**k - 1:, 2**k - 1:] part
        taps = torch.arange(first, kernel) - kernel // 2
        rows = torch.arange(n_wh).view(-1, 1, 1, 1) * stride + taps.view(1, 1, -1, 1)
        cols = torch.arange(n_ww).view(1, -1, 1, 1) * stride + taps.view(1, 1, 1, -1)
        inside = (rows >= 0) & (rows < ph) & (cols >= 0) & (cols < pw)
        levels.append((rows * pw + cols, inside, ph * pw))
    source_offset = hp * wp
    zero_token = source_offset + sum(size for _, _, size in levels)
    for positions, inside, size in levels:
        index = torch.where(inside, positions + source_offset, torch.zeros_like(positions) + zero_token)
        parts.append(index.reshape(n_wh * n_ww, -1))
        off_map.append(~inside.reshape(n_wh * n_ww, -1))
        source_offset += size
    off_map_logits = torch.cat(off_map, 1).float() * OFF_MAP_LOGIT
    return torch.cat(parts, 1).reshape(-1).to(device), off_map_logits.to(device)


def _wrap(positions: torch.Tensor, size) -> torch.Tensor:
    """``positions % size`` for positions in [-size, 2 * size): rolls wrap around the map. Written
    with comparisons, as a remainder by a symbolic size makes torch.export guard on the size."""
    return positions + size * ((positions < 0).long() - (positions >= size).long())


# Eager runs reuse the layout of each map size; bounded, as multi-scale training sees many sizes.
# Never called with symbolic sizes (they cannot be hashed): the standard-ops path computes the
# layout in the graph with compute_key_layout.
key_layout = functools.lru_cache(maxsize=64)(compute_key_layout)

# Logit added to rolled keys where the map is too small for them, on the standard-ops path, which
# keeps one key layout for every size: exp() of it underflows to exactly 0 next to any real key.
DROPPED_KEY_LOGIT = -1e4


def uses_standard_ops(x: torch.Tensor) -> bool:
    """Whether ``x`` is being traced for export or compilation rather than run eagerly.

    Then the model takes a path of standard ops with the same math (:func:`attend_with_standard_ops`,
    no size-dependent Python branches): the eager CPU kernels call a private ATen op and write
    chunks into a preallocated buffer, which the TorchScript ONNX tracer records as a constant
    (all zeros in the graph: the attention output is lost, see tests/test_deployment.py).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(x)


def map_side_exceeds(size, window_size: int, device: torch.device) -> torch.Tensor:
    """``size > window_size`` as a 0-d bool tensor, without a Python branch on a symbolic size."""
    return (torch.arange(size, device=device) >= window_size).any()


class DropPath(nn.Module):
    """Stochastic depth: zeroes whole samples of the residual branch with probability ``p``."""

    def __init__(self, p: float = 0.):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0. or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'p={self.p}'


class Mlp(nn.Module):

    def __init__(self, dims: int, hidden_dims: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class FocalWindowAttention(nn.Module):
    """Focal attention of each ``window_size`` window of a map to its fine and pooled surroundings.

    Args:
        dims: channels C. num_heads: heads; C must divide by it.
        window_size: query window w. expand_size: rolled-neighbour reach e (0: none).
        focal_window: pooled neighbourhood size at level 0. focal_level: levels counting the fine
            one, so ``focal_level - 1`` pooled levels when ``pool_method != 'none'``.

    Shapes: ``forward(x, pooled)`` takes the padded, normed map ``x`` (B, Hp, Wp, C) with Hp, Wp
    multiples of w, and ``pooled[k]`` (B, Hk, Wk, C) with ``Hk = Hp / w * 2**k``; returns
    (B, Hp, Wp, C).
    """

    def __init__(self, dims: int, num_heads: int, window_size: int = 7, expand_size: int = 3,
                 focal_window: int = 7, focal_level: int = 2, pool_method: str = 'fc',
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        self.dims, self.num_heads = dims, num_heads
        self.window_size, self.expand_size = window_size, expand_size
        self.focal_window = focal_window
        self.num_pooled_levels = focal_level - 1 if pool_method != 'none' else 0
        self.scale = qk_scale or (dims // num_heads)**-0.5
        w = window_size

        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1)**2, num_heads))
        self.register_buffer('window_bias_index', relative_position_index((w, w), (w, w)),
                             persistent=False)
        if expand_size > 0:
            self.relative_position_bias_table_to_neighbors = nn.Parameter(
                torch.zeros(1, num_heads, w * w, num_rolled_keys(w, expand_size)))
            nn.init.trunc_normal_(self.relative_position_bias_table_to_neighbors, std=.02)
        self.relative_position_bias_table_to_windows = nn.ParameterList()
        for k in range(self.num_pooled_levels):
            side = self.pooled_neighbourhood(k)
            table = nn.Parameter(torch.zeros(num_heads, (w + side - 1)**2))
            nn.init.trunc_normal_(table, std=.02)
            self.relative_position_bias_table_to_windows.append(table)
            self.register_buffer(f'pooled_bias_index_{k}',
                                 relative_position_index((w, w), (side, side)), persistent=False)

        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dims, dims)
        self.proj_drop = nn.Dropout(proj_drop)
        # Set True to keep the attention weights of the next forward passes in ``self.recorded``
        # (through the plain path; for analysis tools, see tools/analysis/).
        self.record_attention = False
        self.recorded = None

    def pooled_neighbourhood(self, level: int) -> int:
        """Side of the pooled neighbourhood each window sees at ``level``."""
        return self.focal_window + 2**level - 1

    def _bias(self, with_rolled: bool) -> torch.Tensor:
        """Position biases of every key: (heads, w*w, num_keys)."""
        w2, heads = self.window_size**2, self.num_heads
        parts = [self.relative_position_bias_table[self.window_bias_index.view(-1)].view(w2, w2, heads)
                 .permute(2, 0, 1)]
        if with_rolled and self.expand_size > 0:
            parts.append(self.relative_position_bias_table_to_neighbors[0])
        for k, table in enumerate(self.relative_position_bias_table_to_windows):
            index = getattr(self, f'pooled_bias_index_{k}')
            parts.append(table[:, index.view(-1)].view(heads, w2, -1))
        return torch.cat(parts, -1)

    def _layout_for_any_size(self, n_wh, n_ww, with_rolled, device: torch.device):
        """The key layout of the standard-ops path: computed in the graph from the (possibly
        symbolic) window grid, always with the rolled keys' slots; where ``with_rolled`` (a 0-d
        bool tensor or a bool) is False they get DROPPED_KEY_LOGIT, which removes them exactly."""
        index, off_map = compute_key_layout(self.window_size, self.expand_size, self.focal_window,
                                            self.num_pooled_levels, n_wh, n_ww, True, device)
        if self.expand_size > 0:
            w2, rolled = self.window_size**2, num_rolled_keys(self.window_size, self.expand_size)
            pooled = sum(self.pooled_neighbourhood(k)**2 for k in range(self.num_pooled_levels))
            is_rolled = torch.cat([off_map.new_zeros(w2), off_map.new_ones(rolled), off_map.new_zeros(pooled)])
            dropped = ~torch.as_tensor(with_rolled, device=device)
            off_map = off_map + is_rolled * dropped.to(off_map.dtype) * DROPPED_KEY_LOGIT
        return index, off_map

    def forward(self, x: torch.Tensor, pooled: Sequence[torch.Tensor], with_rolled: bool = True) -> torch.Tensor:
        B, hp, wp, _ = x.shape
        C, w, heads = self.dims, self.window_size, self.num_heads
        head_dims = C // heads
        n_wh, n_ww = hp // w, wp // w
        standard_ops = uses_standard_ops(x)
        if standard_ops:
            index, off_map = self._layout_for_any_size(n_wh, n_ww, with_rolled, x.device)
            bias = self._bias(True)
        else:
            index, off_map = key_layout(w, self.expand_size, self.focal_window, self.num_pooled_levels,
                                        n_wh, n_ww, with_rolled, x.device)
            bias = self._bias(with_rolled)

        q, sources = window_queries_and_keys(x, pooled, self.qkv, self.scale, heads, w)
        if self.num_pooled_levels:
            sources.append(sources[0].new_zeros(B, 1, 2, heads, head_dims))
        source = torch.cat(sources, 1)  # (B, S, 2, heads, d): every key and value any window uses

        out, weights = attend(q, source, index, bias, off_map, self.attn_drop, self.training, standard_ops,
                              record=self.record_attention)
        if weights is not None:
            self.recorded = dict(weights=weights.detach().view(B, n_wh * n_ww, heads, w * w, -1),
                                 index=index.view(n_wh * n_ww, -1), off_map=off_map, windows=(n_wh, n_ww),
                                 with_rolled=with_rolled)
        return self.proj_drop(self.proj(merge_windows(out, B, hp, wp, w, C)))

    def extra_repr(self) -> str:
        return (f'dims={self.dims}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'expand_size={self.expand_size}, focal_window={self.focal_window}, '
                f'pooled_levels={self.num_pooled_levels}')


def window_queries_and_keys(x: torch.Tensor, pooled: Sequence[torch.Tensor], qkv: nn.Linear, scale: float,
                            num_heads: int, window_size: int) -> Tuple[torch.Tensor, list]:
    """Queries by window and the parts of the key source, from one qkv projection.

    x (B, Hp, Wp, C) with Hp, Wp multiples of ``window_size``; ``pooled`` maps (B, h, w, C).
    Returns q (B*nW, w*w, heads, d), scaled and in windows row-major like the official partition,
    and a list of (B, n, 2, heads, d) keys and values: the map's, then each pooled map's.
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
    q = projected[:, :, :, :, :, 0].permute(0, 1, 3, 2, 4, 5, 6).reshape(B * n_wh * n_ww, w * w, num_heads,
                                                                         head_dims)
    sources = [projected[..., 1:, :, :].reshape(B, hp * wp, 2, num_heads, head_dims)]
    for level in pooled:
        kv = F.linear(level, qkv.weight[C:], None if qkv.bias is None else qkv.bias[C:])
        sources.append(kv.reshape(B, -1, 2, num_heads, head_dims))
    return q, sources


def _gather_keys(source: torch.Tensor, index: torch.Tensor, num_windows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of every window: (B*nW, heads, num_keys, d) each, as strided views."""
    batch, _, _, heads, head_dims = source.shape
    kv = source.index_select(1, index).view(batch * num_windows, -1, 2, heads, head_dims)
    return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)


# Work in chunks of windows whose temporaries (gathered keys and values, biases, probabilities)
# stay below a few MiB. glibc serves larger blocks with fresh mmap pages, and faulting those in
# costs more than the attention itself; small blocks are reused from the heap and stay in cache.
# Only on the CPU: other devices have caching allocators and want large batched kernels.
CHUNK_BYTES = 4 * 2**20


def _uses_cpu_kernels(device: torch.device) -> bool:
    """The CPU route: PyTorch's CPU flash kernel, over chunks of windows."""
    return device.type == 'cpu'


def _window_chunks(num_windows: int, bytes_per_window: int, device: torch.device) -> list:
    if not _uses_cpu_kernels(device):
        return [slice(0, num_windows)]
    step = max(1, CHUNK_BYTES // bytes_per_window)
    return [slice(start, min(start + step, num_windows)) for start in range(0, num_windows, step)]


class BiasColumns(NamedTuple):
    """Per-window position biases as columns of one table (Focal-fast): with it, the kernels take
    ``bias`` as a table (heads, w*w, U) and key j of window n uses column ``columns[n, j]``.

    columns: (nW, keys) long. order: None, or the (nW,) window numbers in the order the CPU
    kernels take them: first each group of windows with identical rows of ``columns``, then the
    rest. shared_groups: those groups, as (start, stop) ranges of positions in ``order``. A chunk
    inside a group takes one (heads, w*w, keys) bias broadcast over its windows, and its bias
    gradient is the sum over its windows, added to the table once.
    """
    columns: torch.Tensor
    order: Optional[torch.Tensor] = None
    shared_groups: Tuple[Tuple[int, int], ...] = ()


def _as_bias_columns(bias_columns) -> Optional[BiasColumns]:
    """None, a BiasColumns, or a plain (nW, keys) tensor of columns (no groups)."""
    if bias_columns is None or isinstance(bias_columns, BiasColumns):
        return bias_columns
    return BiasColumns(bias_columns)


class _Chunk(NamedTuple):
    """Windows the kernels process at once: ``windows``, a slice of the windows in row-major order
    or a (n,) tensor of window numbers; ``shared``: they all have the same bias columns."""
    windows: Union[slice, torch.Tensor]
    shared: bool = False

    @property
    def size(self) -> int:
        w = self.windows
        return w.stop - w.start if isinstance(w, slice) else len(w)

    @property
    def first(self) -> int:
        return self.windows.start if isinstance(self.windows, slice) else int(self.windows[0])


def _take(t: torch.Tensor, windows, dim: int = 0, offset: int = 0) -> torch.Tensor:
    """The rows of ``windows`` (shifted by ``offset``) of ``t`` along ``dim``: a view for a slice."""
    if isinstance(windows, slice):
        return t.narrow(dim, offset + windows.start, windows.stop - windows.start)
    return t.index_select(dim, windows + offset if offset else windows)


def _put(t: torch.Tensor, windows, value: torch.Tensor, dim: int = 0, offset: int = 0):
    """Write ``value`` into the rows of ``windows`` (shifted by ``offset``) of ``t`` along ``dim``."""
    if isinstance(windows, slice):
        t.narrow(dim, offset + windows.start, windows.stop - windows.start).copy_(value)
    else:
        t.index_copy_(dim, windows + offset if offset else windows, value.to(t.dtype))


def _bias_chunks(num_windows: int, bytes_per_window: int, device: torch.device,
                 bias_columns: Optional[BiasColumns]) -> list:
    """The :class:`_Chunk` s of the kernels: :func:`_window_chunks`, or with a window order (CPU
    only) chunks of at most as many windows along the order, none straddling a group's edge."""
    if bias_columns is None or bias_columns.order is None or not _uses_cpu_kernels(device):
        return [_Chunk(chunk) for chunk in _window_chunks(num_windows, bytes_per_window, device)]
    order, groups = bias_columns.order, bias_columns.shared_groups
    step = max(1, CHUNK_BYTES // bytes_per_window)
    edges = sorted({0, num_windows, *(edge for group in groups for edge in group)})
    return [_Chunk(order[start:min(start + step, stop)], (begin, stop) in groups)
            for begin, stop in zip(edges, edges[1:]) for start in range(begin, stop, step)]


def _chunk_bias(bias: torch.Tensor, bias_columns, chunk) -> torch.Tensor:
    """The position bias of the windows of ``chunk`` (a :class:`_Chunk` or a slice): (heads, 1 or
    windows, w*w, keys), a view or a gather.

    ``bias`` is one of: (heads, w*w, keys), shared by every window; (nW, heads, w*w, keys), one per
    window; or, with ``bias_columns`` (a :class:`BiasColumns` or its (nW, keys) columns), a table
    (heads, w*w, U) whose column ``columns[n, j]`` holds key j of window n. From a table, a
    shared chunk (all its windows have the same columns) gets one bias for all its windows;
    otherwise one gather along the table's last dimension, which leaves the keys contiguous as
    the CPU flash kernel wants its mask (a mask with strided keys costs it a copy).
    """
    if not isinstance(chunk, _Chunk):
        chunk = _Chunk(chunk)
    if bias_columns is not None:
        columns = _as_bias_columns(bias_columns).columns
        heads, area, num_columns = bias.shape
        chunk_columns = columns[chunk.first:chunk.first + 1] if chunk.shared else _take(columns, chunk.windows)
        # Along the last dimension of a 2-d view: index_select of a 3-d tensor along its last
        # dimension takes about three times longer.
        gathered = bias.reshape(heads * area, num_columns).index_select(1, chunk_columns.reshape(-1))
        return gathered.view(heads, area, *chunk_columns.shape).transpose(1, 2)
    if bias.dim() == 4:
        return _take(bias, chunk.windows).transpose(0, 1)
    return bias.unsqueeze(1)


def _add_bias_grad(grad_bias: torch.Tensor, grad_scores: torch.Tensor, bias_columns, chunk):
    """Accumulate ``grad_scores`` (heads, windows, w*w, keys) of ``chunk`` (a :class:`_Chunk` or a
    slice) into ``grad_bias`` (shaped as the bias)."""
    if not isinstance(chunk, _Chunk):
        chunk = _Chunk(chunk)
    if bias_columns is not None:
        columns = _as_bias_columns(bias_columns).columns
        heads, windows, area, keys = grad_scores.shape
        if chunk.shared:  # one bias for every window of the chunk: sum first, then add to the table once
            summed = grad_scores.sum(1).view(heads * area, keys)
            grad_bias.view(heads * area, -1).index_add_(1, columns[chunk.first], summed)
            return
        grad_bias.view(heads * area, -1).index_add_(1, _take(columns, chunk.windows).reshape(-1),
                                                    grad_scores.transpose(1, 2).reshape(heads * area, windows * keys))
    elif grad_bias.dim() == 4:
        if isinstance(chunk.windows, slice):
            grad_bias[chunk.windows] += grad_scores.transpose(0, 1)
        else:
            grad_bias.index_add_(0, chunk.windows, grad_scores.transpose(0, 1))
    else:
        grad_bias += grad_scores.sum(1)


def _attend_fused(q, source, index, bias, off_map, need_lse: bool = True, bias_columns=None):
    """softmax(q k^T + bias + off_map) v, by fused attention calls over chunks of windows.

    q (B*nW, w*w, heads, d); source (B, S, 2, heads, d); bias (heads, w*w, keys), or per window as
    :func:`_chunk_bias` describes; off_map (nW, keys). Returns the output (B*nW, w*w, heads, d)
    and, if ``need_lse``, the log-sum-exp (B*nW, heads, w*w) for the backward. On the CPU both
    come from PyTorch's flash kernel; on other devices the output alone comes from
    ``scaled_dot_product_attention``, and with the log-sum-exp from plain matmul and softmax.
    """
    num_windows, num_keys = off_map.shape
    batch, _, _, heads, head_dims = source.shape
    window_area = q.shape[1]
    bias = bias.to(q.dtype)
    off_map = off_map.to(q.dtype)
    bias_columns = _as_bias_columns(bias_columns)
    index_by_window = index.view(num_windows, num_keys)
    on_cpu = _uses_cpu_kernels(q.device)
    bytes_per_window = num_keys * (2 * heads * head_dims + heads * window_area) * q.element_size()
    out = q.new_empty(q.shape)
    # At least float32 whatever q is: rounded to bf16 (8 bits), a log-sum-exp near 10 is off by up
    # to 0.03, and the backward's recomputed probabilities exp(s - lse) by 3%.
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    lse = q.new_empty(batch * num_windows, heads, window_area, dtype=lse_dtype) if need_lse else None
    chunks = _bias_chunks(num_windows, bytes_per_window, q.device, bias_columns)
    # Chunks outside, images inside: a chunk's bias (gathered per window for Focal-fast) serves
    # every image of the batch.
    for chunk in chunks:
        windows = chunk.windows
        chunk_index = _take(index_by_window, windows).reshape(-1)
        chunk_off_map = _take(off_map, windows)
        mask = _chunk_bias(bias, bias_columns, chunk).transpose(0, 1)
        # Interior windows have no off-map keys: the shared bias broadcasts, nothing to build.
        if not on_cpu or chunk_off_map.any():
            mask = mask + chunk_off_map[:, None, None, :]
        for b in range(batch):
            kv = source[b].index_select(0, chunk_index)
            kv = kv.view(-1, num_keys, 2, heads, head_dims)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            q_chunk = _take(q, windows, offset=b * num_windows).transpose(1, 2)
            if on_cpu:
                out_chunk, lse_chunk = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q_chunk, k, v, 0.0, False, attn_mask=mask, scale=1.0)
            elif not need_lse:
                out_chunk = F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=mask, scale=1.0)
                lse_chunk = None
            else:  # no public fused kernel returns the log-sum-exp with an additive bias on every GPU
                out_chunk, lse_chunk = _attend_with_lse(q_chunk, k, v, mask)
            _put(out, windows, out_chunk.transpose(1, 2), offset=b * num_windows)
            if need_lse:
                _put(lse, windows, lse_chunk, offset=b * num_windows)
    return out, lse


def _attend_with_lse(q, k, v, mask) -> Tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T + mask) v and the log-sum-exp (at least float32) of each query, from (..., queries, d)
    q, (..., keys, d) k and v and a mask broadcasting to (..., queries, keys).

    Scores in float32 (float64 for float64 inputs) whatever the inputs, as fused kernels keep
    them and as the backward recomputes them: under bf16 autocast a score near 16 rounds by up to
    0.06, and probabilities from rounded scores would not be the ones the backward differentiates.
    The probabilities go to the values' dtype for the last product, as in the fused kernels.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = q.to(dtype) @ k.to(dtype).transpose(-2, -1) + mask.to(dtype)
        lse = scores.logsumexp(-1)
        return (scores - lse.unsqueeze(-1)).exp_().to(v.dtype) @ v, lse


class _FocalAttentionCore(torch.autograd.Function):
    """Fused forward; the backward recomputes the attention from the saved queries and key source.

    Saves only q, the key/value source, the output and the log-sum-exp: neither the gathered keys
    and values (about 9x the map at stage 1) nor the attention matrix stay in memory between the
    passes. Gradients are the exact ones of softmax(q k^T + bias + off_map) v.
    """

    @staticmethod
    def forward(ctx, q, source, index, bias, off_map, bias_columns=None):
        out, lse = _attend_fused(q, source, index, bias, off_map, bias_columns=bias_columns)
        ctx.save_for_backward(q, source, index, bias, off_map, out, lse)
        ctx.bias_columns = bias_columns
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # The recomputation runs in float32 and writes products into float32 buffers (out=):
        # autocast, where backward() is called inside it, must not turn them into fp16/bf16.
        with torch.autocast(grad_out.device.type, enabled=False):
            return _FocalAttentionCore._recompute_gradients(ctx, grad_out)

    @staticmethod
    def _recompute_gradients(ctx, grad_out):
        q, source, index, bias, off_map, out, lse = ctx.saved_tensors
        bias_columns = _as_bias_columns(ctx.bias_columns)
        # Under autocast the inputs may be fp16/bf16: accumulate the recomputation in float32.
        dtype = torch.promote_types(q.dtype, torch.float32)
        q_dtype, source_dtype = q.dtype, source.dtype
        q, source, out, grad_out = q.to(dtype), source.to(dtype), out.to(dtype), grad_out.to(dtype)
        bias, off_map, lse = bias.to(dtype), off_map.to(dtype), lse.to(dtype)
        num_windows, num_keys = off_map.shape
        batch, _, _, heads, head_dims = source.shape
        window_area = q.shape[1]
        index_by_window = index.view(num_windows, num_keys)

        def by_head(t, windows, b):  # (B*nW, w*w, heads, d) -> (heads, windows, w*w, d) of image b
            # Rows taken before the permutation: index_select of a permuted view copies it whole.
            return _take(t, windows, offset=b * num_windows).permute(2, 0, 1, 3)

        # Keys with heads outside the window axis, so every product below is one batched GEMM.
        source_by_head = source.permute(2, 0, 3, 1, 4).contiguous()  # (2, B, heads, S, d)
        grad_source = torch.zeros_like(source_by_head)
        grad_q = q.new_empty(batch, heads, num_windows, window_area, head_dims)
        grad_bias = torch.zeros_like(bias)
        bytes_per_window = heads * num_keys * (2 * head_dims + 2 * window_area) * q.element_size()
        on_cpu = _uses_cpu_kernels(q.device)
        # With per-window biases from a table, the images of the batch share them: sum the images'
        # score gradients, then add the sum to the table once per chunk.
        sum_over_images = bias_columns is not None and batch > 1
        for chunk in _bias_chunks(num_windows, bytes_per_window, q.device, bias_columns):
            windows, count = chunk.windows, chunk.size
            rows = heads * count  # one small GEMM per (head, window) below
            chunk_index = _take(index_by_window, windows).reshape(-1)
            bias_and_off_map = _chunk_bias(bias, bias_columns, chunk)  # (heads, 1 or windows, w*w, keys)
            chunk_off_map = _take(off_map, windows)
            if not on_cpu or chunk_off_map.any():
                bias_and_off_map = bias_and_off_map + chunk_off_map[None, :, None, :]
            grad_scores_sum = None
            for b in range(batch):
                kv = source_by_head[:, b].index_select(2, chunk_index).view(2, rows, num_keys, head_dims)
                q_chunk = by_head(q, windows, b).reshape(rows, window_area, head_dims)
                grad_by_window = by_head(grad_out, windows, b)
                grad_chunk = grad_by_window.reshape(rows, window_area, head_dims)
                delta = (grad_by_window * by_head(out, windows, b)).sum(-1, keepdim=True)
                probs = q.new_empty(heads, count, window_area, num_keys)
                chunk_lse = _take(lse, windows, offset=b * num_windows).transpose(0, 1)  # (heads, windows, w*w)
                torch.sub(bias_and_off_map, chunk_lse[..., None], out=probs)
                probs = probs.view(rows, window_area, num_keys).baddbmm_(q_chunk, kv[0].transpose(1, 2)).exp_()
                grad_scores = torch.bmm(grad_chunk, kv[1].transpose(1, 2))
                torch.bmm(probs.transpose(1, 2), grad_chunk, out=kv[1])  # values are spent: grad_v in place
                grad_scores.view(heads, count, window_area, num_keys).sub_(delta)
                grad_scores.mul_(probs)
                del probs
                if not sum_over_images:
                    _add_bias_grad(grad_bias, grad_scores.view(heads, count, window_area, num_keys), bias_columns,
                                   chunk)
                elif grad_scores_sum is None:
                    grad_scores_sum = grad_scores.clone()
                else:
                    grad_scores_sum += grad_scores
                _put(grad_q[b], windows, torch.bmm(grad_scores, kv[0]).view(heads, count, window_area, head_dims),
                     dim=1)
                torch.bmm(grad_scores.transpose(1, 2), q_chunk, out=kv[0])  # keys are spent: grad_k in place
                del grad_scores
                grad_source[:, b].index_add_(2, chunk_index, kv.view(2, heads, count * num_keys, head_dims))
            if sum_over_images:
                _add_bias_grad(grad_bias, grad_scores_sum.view(heads, count, window_area, num_keys), bias_columns,
                               chunk)
                del grad_scores_sum
        grad_q = grad_q.permute(0, 2, 3, 1, 4)  # (B, nW, w*w, heads, d)
        return (grad_q.reshape(q.shape).to(q_dtype), grad_source.permute(1, 3, 0, 2, 4).to(source_dtype), None,
                grad_bias, None, None)


def _attend_with_autograd(q, source, index, bias, off_map, attn_drop: nn.Module, return_weights: bool = False,
                          bias_columns=None):
    """Plain autograd path: with attention dropout (the fused kernels cannot replay it), and when
    the attention weights are recorded (``return_weights``: also returns them, (B*nW, heads, w*w,
    keys), after dropout). ``bias`` as in :func:`_chunk_bias`."""
    num_windows = off_map.shape[0]
    if bias_columns is not None or bias.dim() == 4:  # one bias per window: (nW, heads, w*w, keys)
        bias = _chunk_bias(bias, bias_columns, slice(0, num_windows)).transpose(0, 1)
    k, v = _gather_keys(source, index, num_windows)
    q = q.transpose(1, 2)
    attn = q @ k.transpose(-2, -1)
    batch = q.shape[0] // num_windows
    attn = attn.view(batch, num_windows, *attn.shape[1:]) + bias + off_map[:, None, None, :]
    attn = attn_drop(attn.softmax(-1)).flatten(0, 1)
    out = (attn @ v).transpose(1, 2)
    return (out, attn) if return_weights else out


def attend_with_standard_ops(q, source, index, bias, off_map, attn_drop: Optional[nn.Module] = None,
                             bias_columns=None):
    """softmax(q k^T + bias + off_map) v in standard ops (gather, matmul, softmax), for export and
    compilation: every window at once, no in-place writes, no private kernels, no Python branch on
    sizes or values.

    Arguments as :func:`_attend_fused`: q (B*nW, w*w, heads, d); source (B, S, 2, heads, d); index
    (nW * keys,); bias and ``bias_columns`` as :func:`_chunk_bias` takes them; off_map (nW, keys).
    ``attn_drop`` acts on the probabilities (in training). Returns (B*nW, w*w, heads, d).
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
    # (heads, nW or 1, w*w, keys). A shared bias skips _chunk_bias: a slice of the (symbolic) window
    # count inside its _Chunk would pin that count in a guard, recompiling for every size.
    if bias_columns is not None or bias.dim() == 4:
        bias = _chunk_bias(bias, bias_columns, slice(0, off_map.shape[0]))
    else:
        bias = bias.unsqueeze(1)
    scores = q_by_head @ k.transpose(-2, -1) + bias + off_map[:, None, :]
    probs = scores.softmax(-1)
    if attn_drop is not None:
        probs = attn_drop(probs)
    return (probs @ v).permute(0, 2, 3, 1, 4).reshape(q.shape)


def attend(q, source, index, bias, off_map, attn_drop: nn.Module, training: bool, standard_ops: bool,
           record: bool = False, bias_columns=None):
    """softmax(q k^T + bias + off_map) v: the one switch over the attention paths, for both focal
    attentions. Arguments as :func:`_attend_fused` (``bias`` and ``bias_columns`` as
    :func:`_chunk_bias` takes them). Returns (out, weights); weights (B*nW, heads, w*w, keys) only
    with ``record``, else None. The paths, first match:

    - ``record``: plain autograd, keeping the weights (the attention-map analysis);
    - ``standard_ops`` (export, compilation): :func:`attend_with_standard_ops`;
    - attention dropout in training: plain autograd (the fused kernels cannot replay it);
    - gradients needed: the fused forward and the recomputing backward (:class:`_FocalAttentionCore`);
    - otherwise the fused forward alone.
    """
    args = (q, source, index, bias, off_map)
    if record:
        return _attend_with_autograd(*args, attn_drop, return_weights=True, bias_columns=bias_columns)
    if standard_ops:
        out = attend_with_standard_ops(*args, attn_drop, bias_columns=bias_columns)
    elif training and attn_drop.p > 0:
        out = _attend_with_autograd(*args, attn_drop, bias_columns=bias_columns)
    elif torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad):
        out = _FocalAttentionCore.apply(*args, bias_columns)
    else:
        out = _attend_fused(*args, need_lse=False, bias_columns=bias_columns)[0]
    return out, None


def merge_windows(out: torch.Tensor, batch: int, height: int, width: int, window_size: int,
                  dims: int) -> torch.Tensor:
    """The attention output by window (B*nW, w*w, heads, d) back to the padded map (B, Hp, Wp, C),
    ``height`` and ``width`` the padded map's (multiples of the window).

    A copy, then a view: reshape of the permuted windows would first check whether a view is
    possible (it is when a side has one window), a guard on the sizes that makes torch.compile
    recompile. The view takes the map's own sizes: under dynamic shapes ``(Hp // w) * w`` is not
    known to equal ``Hp``, and asking would be a guard too."""
    w = window_size
    out = out.reshape(batch, height // w, width // w, w, w, dims).permute(0, 1, 3, 2, 4, 5)
    return out.clone(memory_format=torch.contiguous_format).view(batch, height, width, dims)


class FocalTransformerBlock(nn.Module):
    """Pre-norm focal attention and MLP, each with a residual; stochastic depth on both.

    Shapes: (B, H, W, C) -> (B, H, W, C) for any H, W. The map is zero-padded after ``norm1`` to
    multiples of the window, as in the official model.

    Small maps: the official model fixes its geometry at construction from the training image
    size; where a stage map is no larger than the window on its shorter side it drops the rolled
    keys and shrinks the window to that side. We decide per forward pass from the actual map: the
    rolled keys are used only when both sides exceed the window (the official rule, so a map of
    exactly one window uses none), but the window never shrinks: a map smaller than the window on
    one side is zero-padded to it, so the learned tables keep their shapes and any input size runs.
    """

    def __init__(self, dims: int, num_heads: int, window_size: int = 7, expand_size: int = 3,
                 focal_window: int = 7, focal_level: int = 2, pool_method: str = 'fc',
                 mlp_ratio: float = 4., qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.):
        super().__init__()
        if pool_method not in POOLING_METHODS:
            raise ValueError(f'focal_pool must be one of {POOLING_METHODS}, got {pool_method!r}')
        if focal_window % 2 != 1:
            raise ValueError(f'focal windows must be odd, got {focal_window}')
        self.window_size = window_size
        self.pool_method = pool_method
        num_pooled = focal_level - 1 if pool_method != 'none' else 0
        self.pooled_window_sizes = [math.floor(window_size / 2**k) for k in range(num_pooled)]
        self.pool_layers = nn.ModuleList()
        for size in self.pooled_window_sizes:
            if pool_method == 'fc':
                self.pool_layers.append(nn.Linear(size * size, 1))
            elif pool_method == 'conv':
                self.pool_layers.append(nn.Conv2d(dims, dims, size, stride=size, groups=dims))
        self.norm1 = nn.LayerNorm(dims)
        self.attn = FocalWindowAttention(dims, num_heads, window_size, expand_size, focal_window,
                                         focal_level, pool_method, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = Mlp(dims, int(dims * mlp_ratio), drop)

    def _pool(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """One token per sub-window of ``x`` (B, Hp, Wp, C) -> (B, Hk, Wk, C)."""
        B, hp, wp, C = x.shape
        size = self.pooled_window_sizes[level]
        rows, cols = hp // self.window_size * 2**level, wp // self.window_size * 2**level
        x = _crop_centre(x, rows * size, cols * size)
        if self.pool_method == 'fc':
            fc = self.pool_layers[level]
            windows = x.view(B, rows, size, cols, size, C)
            weight = fc.weight.view(size, size)
            if uses_standard_ops(x):
                # ONNX Runtime's Einsum transposes the whole map first: a product and two sums
                # run 20x faster there (eager's einsum is the faster of the two in PyTorch)
                pooled = (windows * weight[:, None, :, None]).sum(4).sum(2)
            else:
                pooled = torch.einsum('bhiwjc,ij->bhwc', windows, weight)
            return pooled + fc.bias
        if self.pool_method == 'conv':
            return self.pool_layers[level](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        windows = x.view(B, rows, size, cols, size, C)
        if self.pool_method == 'mean':
            return windows.mean((2, 4))
        return windows.amax((2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w = self.window_size
        shortcut = x
        x = self.norm1(x)
        # Written as a multiple of w minus the size (not (-H) % w): simpler for symbolic sizes.
        pad_b, pad_r = (H + w - 1) // w * w - H, (W + w - 1) // w * w - W
        # Traced for export or compilation, the sizes may be symbolic: no Python branch on them,
        # so one graph serves every input size (padding by 0 and cropping to the size are no-ops).
        traced = uses_standard_ops(x)
        if traced or pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pooled = [self._pool(x, k) for k in range(len(self.pooled_window_sizes))]
        if traced:
            with_rolled = map_side_exceeds(H, w, x.device) & map_side_exceeds(W, w, x.device)
        else:
            with_rolled = min(H, W) > w
        x = self.attn(x, pooled, with_rolled=with_rolled)
        if traced:  # a gather, not a view: no guard on whether the crop is a no-op
            x = x.index_select(1, torch.arange(H, device=x.device)).index_select(2, torch.arange(W, device=x.device))
        elif pad_b or pad_r:
            x = x[:, :H, :W]
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _crop_centre(x: torch.Tensor, rows, cols) -> torch.Tensor:
    """Crop (B, H, W, C) symmetrically (extra row/col at the end) to (rows, cols) <= (H, W).

    Pooling only ever crops: ``Hp / w * 2**k`` sub-windows of ``floor(w / 2**k)`` tokens never
    exceed the padded map. No branch on the sizes, so symbolic sizes trace to one graph.
    """
    top, left = (x.shape[1] - rows) // 2, (x.shape[2] - cols) // 2
    # narrow, not slicing: its result has exactly ``rows`` rows, also for symbolic sizes
    return x.narrow(1, top, rows).narrow(2, left, cols)


def _centre_to(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Crop or zero-pad (B, H, W, C) symmetrically (extra row/col at the end) to (rows, cols)."""
    H, W = x.shape[1:3]
    pad_rows, pad_cols = max(rows - H, 0), max(cols - W, 0)
    if pad_rows or pad_cols:
        top, left = pad_rows // 2, pad_cols // 2
        x = F.pad(x, (0, 0, left, pad_cols - left, top, pad_rows - top))
    return _crop_centre(x, rows, cols)
