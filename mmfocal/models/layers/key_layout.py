"""Where the keys of every query window come from, for the paper's focal attention.

One job: the geometry of the keys, as index tensors; no parameters, no attention. For a map of
``n_wh`` x ``n_ww`` windows of ``w`` x ``w`` tokens (window size ``w``, expand size ``e``), each
window's keys, in order, are:

1. the window's own ``w*w`` tokens;
2. the *rolled* neighbours: the official model rolls the key map by ``(+-e, +-e)`` four times and
   keeps, from each roll, the ``w*w - (w-e)**2`` slots that fall outside the window. That gives
   ``4 * (w*w - (w-e)**2)`` slots (132 for w=7, e=3): the ``(w+2e)**2 - w*w`` ring around the window
   plus 12 repeats. Rolls wrap around the (padded) map, so border windows see the far side. The
   layout fetches each ring token once, its bias merged from its slots' (:func:`distinct_rolled_keys`);
3. for each pooled level ``k``: the map cut into sub-windows of ``floor(w / 2**k)`` tokens, each
   pooled to one token, and the ``(focal_window + 2**k - 1)**2`` pooled tokens around the query
   window. Off-map positions are a zero key and value whose logits get OFF_MAP_LOGIT added (the
   official model's -100 has the same effect: see there).

The layout is an ``index`` (nW * keys,) into one key source (the map's tokens row-major, then each
pooled level's tokens row-major, then one zero token) and ``off_map`` (nW, keys), the logit added
to each key. :func:`cached_key_layout` serves eager runs; :func:`key_layout_for_any_size` builds it
in the graph while tracing, where the sizes may be symbolic.
"""
import functools
from typing import Tuple

import torch

# Logit added to pooled keys beyond the map. The official model adds -100, whose exp() is about
# 1e-44 relative to the largest weight: a float32 denormal that changes no sum it enters (the
# softmax's denominator is at least 1) and multiplies the zero token's zero value, so the outputs
# are those of -100 (tests/naive_focal.py keeps -100 and checks). -1e4 makes those weights exact
# zeros instead of denormals, which cost time in every exp() and product they meet (x86 cores
# take microcode assists on them): stage 1's attention forward+backward at 512x512 took 9% less
# (docs/speed.md).
OFF_MAP_LOGIT = -1e4

# Logit added to rolled keys where the map is too small for them, by the layout of traced graphs,
# which keeps one key layout for every size: exp() of it underflows to exactly 0 next to any real key.
DROPPED_KEY_LOGIT = -1e4


def relative_position_index(query_size: Tuple[int, int], key_size: Tuple[int, int]) -> torch.Tensor:
    """Index into a ``(qh + kh - 1) * (qw + kw - 1)`` bias table for every (query, key) pair.

    Args:
        query_size (tuple[int, int]): The query grid (qh, qw), anchored at (0, 0).
        key_size (tuple[int, int]): The key grid (kh, kw), anchored at (0, 0).

    Returns:
        torch.Tensor: (qh*qw, kh*kw) long.
    """
    (qh, qw), (kh, kw) = query_size, key_size
    q_rows, q_cols = torch.meshgrid(torch.arange(qh), torch.arange(qw), indexing='ij')
    k_rows, k_cols = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing='ij')
    d_rows = q_rows.reshape(-1, 1) - k_rows.reshape(1, -1) + kh - 1
    d_cols = q_cols.reshape(-1, 1) - k_cols.reshape(1, -1) + kw - 1
    return d_rows * (qw + kw - 1) + d_cols


def rolled_neighbour_offsets(window_size: int, expand_size: int) -> torch.Tensor:
    """The rolled keys' slots, in the official model's order.

    Rolls by (-e,-e), (-e,+e), (+e,-e), (+e,+e); within each roll the window slots, row-major,
    that the roll fills from outside the window. Built in Python, so it is a constant also while
    tracing (no data-dependent boolean indexing).

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.

    Returns:
        torch.Tensor: (n, 4) long rows of (row in window, col in window, row offset, col offset).
    """
    return torch.tensor(_rolled_slots(window_size, expand_size), dtype=torch.long).view(-1, 4)


def _rolled_slots(w: int, e: int) -> list:
    """:func:`rolled_neighbour_offsets` as a list of tuples."""
    # A roll by (-dy, -dx) puts the token at (r + dy, c + dx) into slot (r, c); it fills from
    # outside the window the slots within e of the edges it moves away from.
    rolls = (((e, e), lambda r, c: r >= w - e or c >= w - e), ((e, -e), lambda r, c: r >= w - e or c < e),
             ((-e, e), lambda r, c: r < e or c >= w - e), ((-e, -e), lambda r, c: r < e or c < e))
    return [(r, c, dy, dx) for (dy, dx), outside in rolls for r in range(w) for c in range(w) if outside(r, c)]


def num_rolled_keys(window_size: int, expand_size: int) -> int:
    """Slots the four rolls give a window, each with its own learned bias.

    Some repeat a token (:func:`distinct_rolled_keys`).

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.

    Returns:
        int: ``4 * (w*w - (w-e)**2)``, or 0 without rolls (e = 0).
    """
    return 4 * (window_size**2 - (window_size - expand_size)**2) if expand_size > 0 else 0


def distinct_rolled_keys(window_size: int, expand_size: int) -> torch.Tensor:
    """The rolled keys the layout fetches: each token the rolls reach, once.

    Rolls whose reaches overlap fill two slots with the same token in every window (w=7, e=3: the
    12 tokens of the ring's middle rows and columns, so 120 tokens in 132 slots). The official
    model attends to both slots, each with its own bias b1, b2: exp(s + b1) + exp(s + b2) =
    exp(s + logaddexp(b1, b2)) with the same value, so one key whose bias merges the slots' biases
    (:func:`merge_repeated_slots`) gives the same outputs and gradients with fewer keys.

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.

    Returns:
        torch.Tensor: ``slots`` (n, m) long: for each distinct token, in the order its first slot
        has in :func:`rolled_neighbour_offsets`, the slots that reach it, padded with -1 (m = 2
        where any token repeats); (0, 1) without rolls.
    """
    if expand_size == 0:
        return torch.zeros(0, 1, dtype=torch.long)
    slots_of = {}  # built in Python: also a constant under a tracer or on the meta device
    for slot, (row, col, dy, dx) in enumerate(_rolled_slots(window_size, expand_size)):
        slots_of.setdefault((row + dy, col + dx), []).append(slot)
    width = max(len(slots) for slots in slots_of.values())
    return torch.tensor([slots + [-1] * (width - len(slots)) for slots in slots_of.values()], dtype=torch.long)


def distinct_rolled_offsets(window_size: int, expand_size: int) -> torch.Tensor:
    """:func:`rolled_neighbour_offsets` of the keys the layout fetches.

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.

    Returns:
        torch.Tensor: (n, 4), the first slot of each token of :func:`distinct_rolled_keys`.
    """
    return rolled_neighbour_offsets(window_size, expand_size)[distinct_rolled_keys(window_size, expand_size)[:, 0]]


def merge_repeated_slots(bias: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Per-slot biases to per-key biases: the log-sum-exp of the biases of the slots reaching each key.

    Differentiable; in standard ops (gathers, a log-sum-exp), so it also traces. Written per
    column of ``slots``, each a gather of whole key rows: a reduction over a last dimension of two
    slots runs as scalar code over every (head, query, key) (docs/speed.md).

    Args:
        bias (torch.Tensor): (..., slots).
        slots (torch.Tensor): From :func:`distinct_rolled_keys`.

    Returns:
        torch.Tensor: (..., keys).
    """
    columns = [bias.index_select(-1, slots[:, 0])]
    if slots.shape[1] == 1:
        return columns[0]
    for column in slots.unbind(1)[1:]:
        # -inf where a key has fewer slots: exp(-inf) adds nothing, and its gradient is 0.
        columns.append(bias.index_select(-1, column.clamp(min=0)).masked_fill(column < 0, float('-inf')))
    # The log-sum-exp, written out: the peak it subtracts cancels in value and gradient, so it is detached.
    peak = functools.reduce(torch.maximum, columns).detach()
    return functools.reduce(torch.add, [(column - peak).exp() for column in columns]).log() + peak


def pooled_neighbourhood(focal_window: int, level: int) -> int:
    """Side of the square of pooled tokens each window sees at pooled ``level``.

    Args:
        focal_window (int): The side at level 0.
        level (int): The pooled level.

    Returns:
        int: ``focal_window + 2**level - 1``.
    """
    return focal_window + 2**level - 1


def wrap_around(positions: torch.Tensor, size) -> torch.Tensor:
    """``positions % size`` for positions in [-size, 2 * size): rolls wrap around the map.

    Written with comparisons, as a remainder by a symbolic size makes torch.export guard on it.

    Args:
        positions (torch.Tensor): Rows or columns, long.
        size (int): The map's side (symbolic while tracing).

    Returns:
        torch.Tensor: The wrapped positions.
    """
    return positions + size * ((positions < 0).long() - (positions >= size).long())


def compute_key_layout(window_size: int, expand_size: int, focal_window: int, num_pooled_levels: int, n_wh,
                       n_ww, with_rolled: bool, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where every key of every window comes from, for an ``n_wh`` x ``n_ww`` grid of windows.

    Tensor ops only, so ``n_wh`` and ``n_ww`` may be symbolic (torch.export's SymInts, the ONNX
    tracer's 0-d tensors) and the exported graph computes the layout for each input size.

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.
        focal_window (int): The pooled neighbourhood's side at level 0.
        num_pooled_levels (int): Pooled levels.
        n_wh (int): Windows a column of the map.
        n_ww (int): Windows a row.
        with_rolled (bool): Whether the keys include the rolled neighbours.
        device (torch.device): Where the layout goes.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``index`` (nW * keys,) into the key source (the map's
        tokens row-major, then each pooled level's row-major, then one zero token), and
        ``off_map`` (nW, keys) float32, the logit added to each key: OFF_MAP_LOGIT for pooled keys
        beyond the map (the zero token), 0 elsewhere.
    """
    w = window_size
    hp, wp = n_wh * w, n_ww * w
    win_rows = torch.arange(n_wh).view(-1, 1, 1, 1) * w
    win_cols = torch.arange(n_ww).view(1, -1, 1, 1) * w

    in_rows, in_cols = torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij')
    slot_rows, slot_cols = [in_rows.reshape(-1)], [in_cols.reshape(-1)]
    if with_rolled and expand_size > 0:
        offsets = distinct_rolled_offsets(w, expand_size)
        slot_rows.append(offsets[:, 0] + offsets[:, 2])
        slot_cols.append(offsets[:, 1] + offsets[:, 3])
    slot_rows = torch.cat(slot_rows).view(1, 1, 1, -1)
    slot_cols = torch.cat(slot_cols).view(1, 1, 1, -1)
    map_index = wrap_around(win_rows + slot_rows, hp) * wp + wrap_around(win_cols + slot_cols, wp)
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


# Eager runs reuse the layout of each map size; bounded, as multi-scale training sees many sizes.
# Never called with symbolic sizes (they cannot be hashed): traced graphs compute the layout in
# the graph with key_layout_for_any_size.
cached_key_layout = functools.lru_cache(maxsize=64)(compute_key_layout)


def key_layout_for_any_size(window_size: int, expand_size: int, focal_window: int, num_pooled_levels: int, n_wh,
                            n_ww, with_rolled, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The key layout of a traced graph, computed in the graph from the (possibly symbolic) grid.

    Always with the rolled keys' slots; where ``with_rolled`` is False they get
    DROPPED_KEY_LOGIT, which removes them exactly.

    Args:
        window_size (int): The window w.
        expand_size (int): The rolls' reach e.
        focal_window (int): The pooled neighbourhood's side at level 0.
        num_pooled_levels (int): Pooled levels.
        n_wh (int): Windows a column of the map (symbolic while tracing).
        n_ww (int): Windows a row.
        with_rolled (torch.Tensor | bool): A 0-d bool tensor or a bool.
        device (torch.device): Where the layout goes.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: (index, off_map) as :func:`compute_key_layout`.
    """
    index, off_map = compute_key_layout(window_size, expand_size, focal_window, num_pooled_levels, n_wh, n_ww, True,
                                        device)
    if expand_size > 0:
        w2, rolled = window_size**2, len(distinct_rolled_keys(window_size, expand_size))
        pooled = sum(pooled_neighbourhood(focal_window, k)**2 for k in range(num_pooled_levels))
        is_rolled = torch.cat([off_map.new_zeros(w2), off_map.new_ones(rolled), off_map.new_zeros(pooled)])
        dropped = ~torch.as_tensor(with_rolled, device=device)
        off_map = off_map + is_rolled * dropped.to(off_map.dtype) * DROPPED_KEY_LOGIT
    return index, off_map
