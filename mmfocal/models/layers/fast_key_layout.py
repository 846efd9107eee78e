"""Where the keys of every query window come from, for Focal-fast attention, and their bias columns.

One job: the nearest-token key sets of the authors' Focal-fast model and the bookkeeping that
lets every window share one bias table. Every query of a window attends to the same keys, in two
levels:

0. the ``topk`` tokens of the whole stage map nearest (Euclidean distance, in tokens) to the
   window centre;
1. the ``topk`` nearest pooled tokens, one pooled token per window (all of them when there are
   fewer), located at their window's centre.

Which of several equidistant tokens are kept is decided as the official model decides it: by
``torch.topk`` on the negated distances from each window centre to every token of the map, row by
row, on the CPU (the official model builds these indices once, from its image size; we build them
for the actual map and cache them per map size in :func:`cached_fast_key_layout`).

The bias of a (query, key) pair depends only on their offset. :class:`FastKeyLayout` lists the
distinct key positions of each level (U columns of a (heads, w*w, U) bias table), the column of
each key of each window, the distinct query-minus-key offsets the bias MLPs run on, and the groups
of windows that see the same offsets (which of several equidistant tokens topk keeps depends on
the window's place, so fewer windows share than the geometry suggests).
"""
import functools
from typing import NamedTuple, Optional, Tuple

import torch

from .chunking import BiasColumns

# Rows of the distance matrix handed to torch.topk at once: bounds the layout's temporaries.
_DISTANCE_CHUNK_ELEMENTS = 2**22


def nearest_tokens(centre_rows: torch.Tensor, centre_cols: torch.Tensor, height: int, width: int,
                   topk: int) -> torch.Tensor:
    """Row-major indices of the grid tokens nearest to each centre.

    The official rule: ``torch.topk`` of the negated distances from each centre to the whole row
    of ``height * width`` tokens, on the CPU, whose tie-breaking among equidistant tokens the
    official indices carry. The official model ranks float32 ``sqrt(dr**2 + dc**2)``; we rank the
    exact integer ``dr**2 + dc**2`` instead, which orders and ties every pair of tokens the same
    way (square roots of distinct integers below 2**31 are distinct in float32), so topk makes the
    same comparisons and picks the same tokens, without a square root over the map. Rows go in
    chunks; topk treats each row on its own, so chunking does not change the result.

    Args:
        centre_rows (torch.Tensor): (n,) rows of the centres, in tokens.
        centre_cols (torch.Tensor): (n,) columns.
        height (int): Rows of the grid.
        width (int): Columns of the grid.
        topk (int): Tokens a centre.

    Returns:
        torch.Tensor: (n, min(topk, height*width)) long.
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

    Only windows away from the map's borders can share bias columns, and fewer than the map's
    geometry suggests: which of several equidistant tokens topk keeps depends on where the window
    is, so interior windows fall into several groups (docs/engineering_notes.md).

    Attributes:
        index (torch.Tensor): (nW * keys,) into the key source: the padded map's tokens row-major
            (``Hp * Wp``), then the pooled tokens row-major (``nWh * nWw``).
        off_map (torch.Tensor): (nW, keys) zeros (Focal-fast has no masked keys; the kernels'
            argument).
        bias_columns (torch.Tensor): (nW, keys) into the concatenated bias tables of the levels.
        offsets (tuple[torch.Tensor, ...]): Per level, (U_l, 2) the distinct key positions
            relative to the window's top-left token, in tokens (a pooled token sits at its
            window's centre).
        keys_per_level (tuple[int, ...]): (level-0 keys, level-1 keys).
        differences (tuple[torch.Tensor, ...]): Per level, (V_l, 2) the distinct query-minus-key
            offsets over the window's ``w*w`` queries and the level's ``U_l`` key positions: the
            inputs of the level's bias MLP.
        difference_index (tuple[torch.Tensor, ...]): Per level, (w*w * U_l,) the row of
            ``differences`` of each (query, key position) pair, query-major. Level 0's pairs
            have many times fewer distinct offsets (nearby tokens: the same offsets recur from
            query to query); level 1's do not (pooled tokens sit a window apart).
        window_order (torch.Tensor, optional): The (nW,) window numbers in the order the CPU
            kernels take them: the windows of each shared group, then the others (row-major).
        shared_groups (tuple[tuple[int, int], ...]): (start, stop) ranges of positions in
            ``window_order``: groups of at least MIN_SHARED_GROUP windows with identical rows of
            ``bias_columns``, i.e. the same key offsets.
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
        """The bias columns, window order and groups, as the attention kernels take them.

        Returns:
            BiasColumns: The columns, order and groups.
        """
        return BiasColumns(self.bias_columns, self.window_order, self.shared_groups)


def unique_pairs(pairs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(pairs, dim=0, return_inverse=True)``, through a 1-d unique of one int64 a pair.

    The same rows, order and inverse (the encoding keeps the lexicographic order), and faster
    than the row-wise unique on the CPU.

    Args:
        pairs (torch.Tensor): (N, 2) integers.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The distinct pairs (M, 2) and the inverse (N,).
    """
    low = pairs.amin(0)
    shifted = pairs.long() - low
    span = shifted[:, 1].amax() + 1
    unique, inverse = torch.unique(shifted[:, 0] * span + shifted[:, 1], return_inverse=True)
    return torch.stack([unique // span, unique % span], 1).to(pairs.dtype) + low, inverse


def distinct_differences(window_size: int, key_positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The distinct query-minus-key offsets of a window's queries and keys (see :class:`FastKeyLayout`).

    Args:
        window_size (int): The window w.
        key_positions (torch.Tensor): (U, 2) key positions relative to the window's top-left token.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The distinct offsets (V, 2), and for each (query, key)
        pair, query-major, its row of them (w*w * U,).
    """
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
    """Group the windows with identical bias columns.

    Args:
        columns (torch.Tensor): (nW, keys) bias columns.
        min_size (int): The smallest group kept. Defaults to MIN_SHARED_GROUP.

    Returns:
        tuple: (order, groups): the window numbers, first each group of at least ``min_size``
        identical rows (groups in order of their first window, windows row-major within each),
        then the other windows row-major; and the groups as (start, stop) ranges of positions in
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


def compute_fast_key_layout(window_size: int, topk: int, with_pooled: bool, height: int, width: int,
                            device: torch.device, with_groups: bool = True) -> FastKeyLayout:
    """The :class:`FastKeyLayout` of a ``height`` x ``width`` map in ``window_size`` windows.

    Windows tile the map padded at the bottom/right to window multiples; level-0 keys are tokens
    of the actual map only (never padding), nearest to each window's centre
    ``(i * w + w // 2, j * w + w // 2)``; level-1 keys are pooled tokens, nearest in window units.
    Within a window the keys are sorted by bias column (the order of keys does not change the
    attention), so windows that see the same offsets have identical column rows. Without
    ``with_groups`` the layout has no window order and no groups (the standard-ops path of export
    and compilation uses neither, and Dynamo cannot trace the grouping's ``tolist``).

    Args:
        window_size (int): The window w.
        topk (int): Keys a level.
        with_pooled (bool): Whether there is the pooled level.
        height (int): The map's rows, before padding.
        width (int): The map's columns, before padding.
        device (torch.device): Where the layout goes.
        with_groups (bool): Whether to find the window order and groups. Defaults to True.

    Returns:
        FastKeyLayout: The layout.
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


# Eager runs and traces reuse the layout of each map size (it is a constant of the size; see
# compute_fast_key_layout); bounded, as multi-scale training sees many sizes.
cached_fast_key_layout = functools.lru_cache(maxsize=256)(compute_fast_key_layout)

