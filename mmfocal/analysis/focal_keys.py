"""Where the keys of one focal-attention query lie on the stage map, and what weight each got.

A focal-attention layer with ``record_attention = True`` keeps, from its real forward pass, the
softmax weights of every query over every key and ``index``, where each key was fetched from: a
*key source* made of the stage map's tokens, then each pooled level's tokens (all row-major), then
one zero token for pooled keys that fall off the map. This module turns that into geometry: for
one query, each key's square on the stage map (in stage-map tokens), its level, whether it fell
off the map, and for the rolled neighbours where the layout put it before the roll wrapped it
around the map border. Pure torch/numpy; drawing is in :mod:`mmfocal.visualization.attention_map`.

Only the *description* of the key source and the key groups is backbone specific:
:func:`focal_transformer_key_source` and :func:`focal_transformer_key_groups` for
``FocalWindowAttention`` (window tokens, rolled neighbours, pooled levels), and
:func:`focal_fast_key_source` for ``FocalFastAttention`` (nearest map tokens, nearest pooled
windows); everything else reads positions out of the recorded ``index``.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..models.layers.key_layout import distinct_rolled_offsets


@dataclass(frozen=True)
class KeyGrid:
    """One part of the key source: a grid of tokens, row-major.

    Attributes:
        name (str): What the tokens are, e.g. ``'map'`` or ``'pooled level 1'``.
        rows (int): Rows of the grid.
        cols (int): Columns of the grid.
        cell (int): Token (r, c) covers the ``cell`` x ``cell`` stage-map tokens from
            ``(top + r * cell, left + c * cell)``. Defaults to 1.
        top (int): See ``cell``. Defaults to 0.
        left (int): See ``cell``. Defaults to 0.
    """
    name: str
    rows: int
    cols: int
    cell: int = 1
    top: int = 0
    left: int = 0

    @property
    def size(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class KeyGroup:
    """A run of consecutive keys of one kind (one *level* in the pictures).

    Attributes:
        name (str): What the keys are.
        count (int): How many.
        layout (np.ndarray, optional): Where the keys lie relative to the query window's top-left
            token, before any wrap-around, as (row, col) per key in stage-map tokens, shape
            (count, 2); when fixed (window tokens, rolled neighbours). Defaults to None.
        grid_side (int, optional): The keys form a ``grid_side`` x ``grid_side`` block of source
            tokens, row-major (pooled levels), which places the keys that fell off the map.
            Defaults to None.
    """
    name: str
    count: int
    layout: Optional[np.ndarray] = None
    grid_side: Optional[int] = None


@dataclass
class QueryKeys:
    """Every key of one query, in key order.

    Positions are in stage-map tokens (row, col); the arrays have one entry per key.

    Attributes:
        groups (list[KeyGroup]): The key groups, in key order.
        group (np.ndarray): Each key's index into ``groups``.
        top (np.ndarray): The row of the key's token (its source; an off-map key: where it would
            be).
        left (np.ndarray): Its column.
        size (np.ndarray): The side of the key's square.
        nominal_top (np.ndarray): The row the key layout puts it at, before wrapping around the map.
        nominal_left (np.ndarray): The column likewise.
        off_map (np.ndarray): A pooled key beyond the map (a zero token whose logit got the
            off-map logit).
        weights (np.ndarray): The weights, shape (heads, num_keys); each row sums to 1.
        query (tuple[int, int]): The query token (row, col).
        window (tuple[int, int, int]): Top, left and side of the query's window.
        map_size (tuple[int, int]): The stage map before padding.
        padded_size (tuple[int, int]): The map the windows tile (multiples of the window).
        extras (dict): Anything a reader adds. Defaults to empty.
    """
    groups: List[KeyGroup]
    group: np.ndarray
    top: np.ndarray
    left: np.ndarray
    size: np.ndarray
    nominal_top: np.ndarray
    nominal_left: np.ndarray
    off_map: np.ndarray
    weights: np.ndarray
    query: Tuple[int, int]
    window: Tuple[int, int, int]  # top, left, side of the query's window (stage-map tokens)
    map_size: Tuple[int, int]  # the stage map before padding
    padded_size: Tuple[int, int]  # the map the windows tile (multiples of the window)
    extras: dict = field(default_factory=dict)

    @property
    def wrapped(self) -> np.ndarray:
        """Keys whose token is not where the layout put them: rolled neighbours the roll brought
        from the far side of the map."""
        return (self.top != self.nominal_top) | (self.left != self.nominal_left)

    def mean_weights(self) -> np.ndarray:
        """The weights' mean over the heads, shape (num_keys, )."""
        return self.weights.mean(0)

    def mass_per_group(self, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """The total weight of each group.

        Args:
            weights (np.ndarray, optional): Weights of the keys, shape (num_keys, ). Defaults to
                None, the mean over the heads.

        Returns:
            np.ndarray: One total per group, shape (len(groups), ).
        """
        weights = self.mean_weights() if weights is None else weights
        return np.array([weights[self.group == g].sum() for g in range(len(self.groups))])


def focal_transformer_key_source(attention, windows: Tuple[int, int]) -> List[KeyGrid]:
    """The key source of ``FocalWindowAttention``.

    The padded map, then per pooled level ``k`` a ``n_wh * 2**k`` x ``n_ww * 2**k`` grid of
    sub-windows of ``floor(w / 2**k)`` tokens, centred on the padded map as the block's pooling
    crops (or pads) it to a whole number of sub-windows.

    Args:
        attention (FocalWindowAttention): The layer.
        windows (tuple[int, int]): The grid of windows, (n_wh, n_ww).

    Returns:
        list[KeyGrid]: The parts of the key source, in order.
    """
    w = attention.window_size
    n_wh, n_ww = windows
    hp, wp = n_wh * w, n_ww * w
    grids = [KeyGrid('map', hp, wp)]
    for k in range(attention.num_pooled_levels):
        cell = math.floor(w / 2**k)
        rows, cols = n_wh * 2**k, n_ww * 2**k
        grids.append(KeyGrid(f'pooled level {k + 1}', rows, cols, cell, _centring_offset(hp, rows * cell),
                             _centring_offset(wp, cols * cell)))
    return grids


def _centring_offset(have: int, want: int) -> int:
    """Where a ``want``-long span starts on a ``have``-long one, cropped or zero-padded symmetrically
    (the extra one at the end)."""
    return (have - want) // 2 if have >= want else -((want - have) // 2)


def focal_transformer_key_groups(attention, with_rolled: bool) -> List[KeyGroup]:
    """The key groups of ``FocalWindowAttention``, in key order.

    Args:
        attention (FocalWindowAttention): The layer.
        with_rolled (bool): Whether the block took rolled neighbours.

    Returns:
        list[KeyGroup]: The window's ``w * w`` tokens, the rolled neighbours (when taken), then
        one group per pooled level.
    """
    w, e = attention.window_size, attention.expand_size
    rows, cols = np.meshgrid(np.arange(w), np.arange(w), indexing='ij')
    groups = [KeyGroup('window tokens', w * w, layout=np.stack([rows.ravel(), cols.ravel()], 1))]
    if with_rolled and e > 0:
        # Each token the rolls reach once, as the layout fetches it (its weight: that of its slots together).
        offsets = distinct_rolled_offsets(w, e).numpy()
        groups.append(KeyGroup('rolled neighbours', len(offsets), layout=offsets[:, :2] + offsets[:, 2:]))
    for k in range(attention.num_pooled_levels):
        side = attention.pooled_neighbourhood(k)
        groups.append(KeyGroup(f'pooled level {k + 1}', side * side, grid_side=side))
    return groups


def locate_keys(index: np.ndarray, source: Sequence[KeyGrid], groups: Sequence[KeyGroup],
                window_origin: Tuple[int, int]):
    """The positions of one window's keys.

    Args:
        index (np.ndarray): Each key's index into the key source, shape (num_keys, ). An index
            past the grids is the zero token: an off-map key, placed by its group's grid.
        source (Sequence[KeyGrid]): The key source.
        groups (Sequence[KeyGroup]): The key groups, counting ``num_keys`` keys in all.
        window_origin (tuple[int, int]): The window's top-left token (row, col).

    Returns:
        tuple: ``(group, top, left, size, nominal_top, nominal_left, off_map)``, arrays of shape
        (num_keys, ), as :class:`QueryKeys`' attributes.
    """
    index = np.asarray(index).astype(np.int64)
    if sum(g.count for g in groups) != len(index):
        raise ValueError(f'the key groups count {sum(g.count for g in groups)} keys, the recorded '
                         f'index has {len(index)}')
    starts = np.cumsum([0] + [grid.size for grid in source])
    grid_of = np.searchsorted(starts, index, side='right') - 1
    off_map = grid_of >= len(source)
    top, left, size = (np.zeros(len(index)) for _ in range(3))
    for g, grid in enumerate(source):
        keys = grid_of == g
        r, c = np.divmod(index[keys] - starts[g], grid.cols)
        top[keys], left[keys], size[keys] = grid.top + r * grid.cell, grid.left + c * grid.cell, grid.cell
    group = np.repeat(np.arange(len(groups)), [g.count for g in groups])
    nominal_top, nominal_left = top.copy(), left.copy()
    for g, spec in enumerate(groups):
        keys = np.flatnonzero(group == g)
        if spec.layout is not None:
            if off_map[keys].any():
                raise ValueError(f'{spec.name}: keys with a fixed layout cannot fall off the map')
            nominal_top[keys] = window_origin[0] + spec.layout[:, 0]
            nominal_left[keys] = window_origin[1] + spec.layout[:, 1]
        elif spec.grid_side is not None:
            _place_on_grid(keys, spec, top, left, size, off_map)
            nominal_top[keys], nominal_left[keys] = top[keys], left[keys]
    return group, top, left, size, nominal_top, nominal_left, off_map


def _place_on_grid(keys, spec: KeyGroup, top, left, size, off_map):
    """Fill in the squares of a grid group's off-map keys from its on-map ones (in place), and check
    that the on-map ones do form the regular grid the layout promises."""
    on_map = keys[~off_map[keys]]
    if len(on_map) == 0:
        raise ValueError(f'{spec.name}: every key is off the map; nothing to place the grid by')
    anchor = on_map[0]
    cell = size[anchor]
    slot_rows, slot_cols = np.divmod(keys - keys[0], spec.grid_side)
    anchor_row, anchor_col = slot_rows[anchor - keys[0]], slot_cols[anchor - keys[0]]
    grid_top = top[anchor] + (slot_rows - anchor_row) * cell
    grid_left = left[anchor] + (slot_cols - anchor_col) * cell
    on = ~off_map[keys]
    if not (np.array_equal(grid_top[on], top[keys][on]) and np.array_equal(grid_left[on], left[keys][on])):
        raise ValueError(f'{spec.name}: the recorded keys do not form a {spec.grid_side}x{spec.grid_side} grid')
    top[keys], left[keys], size[keys] = grid_top, grid_left, cell


def focal_window_query_keys(attention, map_size: Tuple[int, int], row: int, col: int,
                            sample: int = 0) -> QueryKeys:
    """The keys and weights of one query token of a ``FocalWindowAttention``.

    Args:
        attention (nn.Module): The layer, its last forward pass recorded
            (``record_attention = True``).
        map_size (tuple[int, int]): The stage map's (H, W) before padding, in tokens.
        row (int): The query token's row on the stage map.
        col (int): Its column.
        sample (int): The image of the recorded batch. Defaults to 0.

    Returns:
        QueryKeys: The query's keys, their squares on the stage map and their weights.
    """
    def describe(recorded, index):
        """The key source and key groups of the recorded pass, for :func:`_read_query`.

        Args:
            recorded (dict): The layer's recording (``attention.recorded``).
            index (np.ndarray): The query window's recorded key positions (unused: this layer's key
                layout is fixed).

        Returns:
            tuple[list[KeyGrid], list[KeyGroup]]: The parts of the key source and the key groups.
        """
        return (focal_transformer_key_source(attention, recorded['windows']),
                focal_transformer_key_groups(attention, recorded['with_rolled']))

    keys, recorded, window = _read_query(attention, map_size, row, col, sample, describe)
    if not np.array_equal(_numpy(recorded['off_map'][window]) < 0, keys.off_map):
        raise ValueError('the off-map keys of the recorded mask and of the key source disagree')
    return keys


def focal_fast_key_source(attention, windows: Tuple[int, int], map_size: Tuple[int, int]) -> List[KeyGrid]:
    """The key source of ``FocalFastAttention``: the padded map, then one pooled token per window.

    The block pools the unpadded map zero-padded symmetrically to window multiples, so pooled token
    (r, c) covers the ``w`` x ``w`` tokens from ``(r * w - top_pad, c * w - left_pad)``.

    Args:
        attention (FocalFastAttention): The layer.
        windows (tuple[int, int]): The grid of windows, (n_wh, n_ww).
        map_size (tuple[int, int]): The stage map's (H, W) before padding.

    Returns:
        list[KeyGrid]: The parts of the key source, in order.
    """
    w = attention.window_size
    n_wh, n_ww = windows
    hp, wp = n_wh * w, n_ww * w
    grids = [KeyGrid('map', hp, wp)]
    if attention.focal_level > 1:
        grids.append(KeyGrid('pooled windows', n_wh, n_ww, w, _centring_offset(map_size[0], hp),
                             _centring_offset(map_size[1], wp)))
    return grids


def focal_fast_query_keys(attention, map_size: Tuple[int, int], row: int, col: int, sample: int = 0) -> QueryKeys:
    """The keys and weights of one query token of a ``FocalFastAttention``.

    Two groups: the ``topk`` map tokens nearest to the query window's centre, and the ``topk``
    nearest pooled windows. Their positions are wherever the recorded ``index`` says (no fixed
    layout); no key is ever off the map.

    Args:
        attention (nn.Module): The layer, its last forward pass recorded
            (``record_attention = True``).
        map_size (tuple[int, int]): The stage map's (H, W) before padding, in tokens.
        row (int): The query token's row on the stage map.
        col (int): Its column.
        sample (int): The image of the recorded batch. Defaults to 0.

    Returns:
        QueryKeys: The query's keys, their squares on the stage map and their weights.
    """
    def describe(recorded, index):
        """The key source and key groups of the recorded pass, for :func:`_read_query`.

        Args:
            recorded (dict): The layer's recording (``attention.recorded``).
            index (np.ndarray): The query window's recorded key positions in the key source, shape
                (keys, ).

        Returns:
            tuple[list[KeyGrid], list[KeyGroup]]: The parts of the key source and the key groups.

        Raises:
            ValueError: If the recorded keys are not map tokens first, then pooled windows.
        """
        n_wh, n_ww = recorded['windows']
        w = attention.window_size
        counts = recorded['keys_per_level']
        # locate_keys reads groups as runs of consecutive keys; the layout keeps map tokens first.
        if not np.array_equal(index < n_wh * w * n_ww * w, np.arange(len(index)) < counts[0]):
            raise ValueError('the recorded keys are not ordered map tokens first, then pooled windows')
        names = ('nearest map tokens', 'nearest pooled windows')
        return (focal_fast_key_source(attention, (n_wh, n_ww), map_size),
                [KeyGroup(name, count) for name, count in zip(names, counts)])

    return _read_query(attention, map_size, row, col, sample, describe)[0]


def _read_query(attention, map_size: Tuple[int, int], row: int, col: int, sample: int, describe):
    """What every attention layer's reading shares: the recording (checked), the query's window and
    slot, the window's recorded keys located through ``describe(recorded, index)`` -> (key source
    grids, key groups), and the query's weights. Returns (QueryKeys, recording, window number)."""
    recorded = getattr(attention, 'recorded', None)
    if not recorded:
        raise ValueError('the attention layer recorded nothing: set record_attention = True '
                         'and run a forward pass first')
    height, width = map_size
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f'query token ({row}, {col}) is outside the {height}x{width} stage map')
    w = attention.window_size
    n_wh, n_ww = recorded['windows']
    window = (row // w) * n_ww + col // w
    slot = (row % w) * w + col % w
    origin = ((row // w) * w, (col // w) * w)
    index = _numpy(recorded['index'][window]).astype(np.int64)
    source, groups = describe(recorded, index)
    located = locate_keys(index, source, groups, origin)
    weights = _numpy(recorded['weights'][sample, window, :, slot, :]).astype(np.float64)
    keys = QueryKeys(groups, *located, weights=weights, query=(row, col), window=(*origin, w),
                     map_size=(height, width), padded_size=(n_wh * w, n_ww * w))
    return keys, recorded, window


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


# How to read each attention layer's recording; a new focal backbone adds its layer here with a
# function that describes its key source (grids) and key groups, as the one above does.
QUERY_KEYS = {'FocalWindowAttention': focal_window_query_keys, 'FocalFastAttention': focal_fast_query_keys}


def query_keys(attention, map_size: Tuple[int, int], row: int, col: int, sample: int = 0) -> QueryKeys:
    """The keys and weights of one query token of any supported attention layer
    (:data:`QUERY_KEYS`).

    Args:
        attention (nn.Module): The layer, its last forward pass recorded
            (``record_attention = True``).
        map_size (tuple[int, int]): The stage map's (H, W) before padding, in tokens.
        row (int): The query token's row on the stage map.
        col (int): Its column.
        sample (int): The image of the recorded batch. Defaults to 0.

    Returns:
        QueryKeys: The query's keys, their squares on the stage map and their weights.
    """
    reader = QUERY_KEYS.get(type(attention).__name__)
    if reader is None:
        raise ValueError(f'no key layout known for {type(attention).__name__}; supported: {", ".join(QUERY_KEYS)}')
    return reader(attention, map_size, row, col, sample)
