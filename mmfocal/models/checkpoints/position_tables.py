"""A checkpoint's relative-position tables resized for a model of other window or focal-window sizes.

Dense-prediction fine-tuning starts from the 224x224, window-7 ImageNet checkpoints with other
windows (window 12, larger focal windows); mmdet's Swin and timm resize their relative-position
tables by bicubic interpolation for this, and so does :func:`resize_position_tables` for the three
tables of :class:`~mmfocal.models.layers.focal_attention.FocalWindowAttention` (window ``w``,
expand size ``e``, pooled level ``k`` with a pooled neighbourhood of side ``s_k = focal_window +
2**k - 1``):

* ``relative_position_bias_table`` ((2w-1)**2, heads): indexed by the (row, column) offset of a key
  from its query inside the window, a (2w-1) x (2w-1) grid; resized as a grid (Swin's table).
* ``relative_position_bias_table_to_windows.{k}`` (heads, (w+s_k-1)**2): indexed by query row minus
  pooled-key row (and the same for columns), a (w+s_k-1) x (w+s_k-1) grid; resized as a grid.
* ``relative_position_bias_table_to_neighbors`` (1, heads, w*w, 4 * (w*w - (w-e)**2)): not an
  offset grid but a free bias per query slot and rolled key. Each of the four rolls by (+-e, +-e)
  fills the window slots within ``e`` of two edges (an L-shaped band) with keys from outside the
  window. Per roll, the table is a function on (query row, query column, slot row, slot column):
  the query axes are resized like a grid, w -> w'; each slot axis in two parts, the band (e -> e')
  and the rest of the window (w-e -> w'-e'), so that keys outside the window stay outside it and
  no slot the roll does not fill is ever read.

The window also sets the size of the sub-windows that the pooled levels pool (``floor(w / 2**k)``
tokens a side), so the 'fc' pooling weights ``pool_layers.{k}.weight`` (1, n*n) of a block (and
the depthwise kernels (C, 1, n, n) of 'conv' pooling) are resized with the tables: as an n x n grid,
scaled by the ratio of the cell counts so that the pooling weights keep their sum (a mean stays a
mean).

All resizing is bicubic (``F.interpolate``, ``align_corners=False``), so a table resized to its own
size is unchanged.
"""
import math
from collections import OrderedDict
from typing import List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.focal_attention import FocalTransformerBlock, FocalWindowAttention
from ..layers.key_layout import rolled_neighbour_offsets

__all__ = ['resize_position_tables', 'resize_grid_table', 'resize_neighbour_table', 'resize_pooling_weight',
           'neighbour_table_geometry']

WINDOW_TABLE = 'relative_position_bias_table'
POOLED_TABLE = 'relative_position_bias_table_to_windows'
NEIGHBOUR_TABLE = 'relative_position_bias_table_to_neighbors'
POOLING_WEIGHT = 'pool_layers'


def _grid_side(cells: int) -> Optional[int]:
    side = math.isqrt(cells)
    return side if side * side == cells else None


def resize_grid_table(table: torch.Tensor, side: int) -> torch.Tensor:
    """A table over an n x n grid resized bicubically to a ``side`` x ``side`` grid.

    Args:
        table (torch.Tensor): (heads, n*n).
        side (int): The new grid's side.

    Returns:
        torch.Tensor: (heads, side*side), of ``table``'s dtype.
    """
    heads, cells = table.shape
    n = _grid_side(cells)
    grid = table.float().reshape(1, heads, n, n)
    resized = F.interpolate(grid, size=(side, side), mode='bicubic', align_corners=False)
    return resized.reshape(heads, side * side).to(table.dtype)


def resize_pooling_weight(weight: torch.Tensor, side: int) -> torch.Tensor:
    """Pooling weights over an n x n sub-window resized bicubically to ``side`` x ``side``.

    The weights are scaled by n*n / side**2, so that they keep their sum (a mean stays a mean).

    Args:
        weight (torch.Tensor): 'fc' pooling (1, n*n) or 'conv' pooling (C, 1, n, n).
        side (int): The new sub-window's side.

    Returns:
        torch.Tensor: (1, side*side) or (C, 1, side, side), of ``weight``'s dtype.
    """
    n = weight.shape[-1] if weight.dim() == 4 else _grid_side(weight.shape[1])
    grid = weight.float().reshape(-1, 1, n, n)
    resized = F.interpolate(grid, size=(side, side), mode='bicubic', align_corners=False) * (n * n / side**2)
    shape = (weight.shape[0], side * side) if weight.dim() == 2 else (weight.shape[0], 1, side, side)
    return resized.reshape(shape).to(weight.dtype)


def _cubic_weights(source: int, target: int) -> torch.Tensor:
    """(target, source): the weights 1-D bicubic interpolation from ``source`` to ``target`` points
    gives each source point (F.interpolate's, borders replicated); the identity when equal."""
    eye = torch.eye(source, dtype=torch.float64).view(1, 1, source, source)
    return F.interpolate(eye, size=(target, source), mode='bicubic', align_corners=False)[0, 0]


def _slot_axis_weights(window: int, expand: int, new_window: int, new_expand: int, band_at_end: bool) -> torch.Tensor:
    """(new_window, window) weights along one slot axis of a roll: the band of ``expand`` slots the
    roll fills from outside the window (at the end of the axis or at its start) and the other
    ``window - expand`` slots, each resized on its own."""
    band, rest = _cubic_weights(expand, new_expand), _cubic_weights(window - expand, new_window - new_expand)
    weights = torch.zeros(new_window, window, dtype=torch.float64)
    if band_at_end:
        weights[:new_window - new_expand, :window - expand] = rest
        weights[new_window - new_expand:, window - expand:] = band
    else:
        weights[:new_expand, :expand] = band
        weights[new_expand:, expand:] = rest
    return weights


def neighbour_table_geometry(table_shape) -> Optional[Tuple[int, int]]:
    """The window and expand size a rolled-neighbour table was made for.

    Args:
        table_shape (Sequence[int]): The shape of a (1, heads, w*w, 4 * (w*w - (w-e)**2)) table.

    Returns:
        tuple[int, int] | None: (window ``w``, expand size ``e``), None where no such sizes fit.
    """
    if len(table_shape) != 4 or table_shape[0] != 1:
        return None
    window = _grid_side(table_shape[2])
    if window is None or table_shape[3] % 4:
        return None
    inner = window * window - table_shape[3] // 4  # (w - e)**2
    inner_side = _grid_side(inner) if inner >= 0 else None
    if inner_side is None or not 0 < window - inner_side < window:
        return None
    return window, window - inner_side


def resize_neighbour_table(table: torch.Tensor, window: int, expand: int) -> torch.Tensor:
    """A rolled-neighbour table resized to another window and expand size (see the module docstring).

    Args:
        table (torch.Tensor): (1, heads, w*w, 4 * (w*w - (w-e)**2)).
        window (int): The new window.
        expand (int): The new expand size.

    Returns:
        torch.Tensor: (1, heads, window**2, 4 * (window**2 - (window-expand)**2)), the rolled
        keys in the official order, of ``table``'s dtype.
    """
    old_window, old_expand = neighbour_table_geometry(table.shape)
    heads = table.shape[1]
    old_keys, new_keys = rolled_neighbour_offsets(old_window, old_expand), rolled_neighbour_offsets(window, expand)
    query = _cubic_weights(old_window, window)
    source = table[0].double().reshape(heads, old_window, old_window, -1)
    resized = table.new_zeros(1, heads, window * window, len(new_keys), dtype=torch.float64)
    # The four rolls; a positive row offset takes keys from below the window, which fill the
    # window's bottom rows (the band at the end of the row axis), and so on.
    for row_sign, col_sign in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        old_of_roll = _keys_of_roll(old_keys, row_sign, col_sign)
        new_of_roll = _keys_of_roll(new_keys, row_sign, col_sign)
        # (heads, query row, query col, slot row, slot col); slots the roll does not fill stay 0
        slots = source.new_zeros(heads, old_window, old_window, old_window, old_window)
        slots[..., old_keys[old_of_roll, 0], old_keys[old_of_roll, 1]] = source[..., old_of_roll]
        rows = _slot_axis_weights(old_window, old_expand, window, expand, band_at_end=row_sign > 0)
        cols = _slot_axis_weights(old_window, old_expand, window, expand, band_at_end=col_sign > 0)
        new_slots = torch.einsum('ai,bj,xr,yc,hijrc->habxy', query, query, rows, cols, slots)
        picked = new_slots[..., new_keys[new_of_roll, 0], new_keys[new_of_roll, 1]]
        resized[0][..., new_of_roll] = picked.reshape(heads, window * window, -1)
    return resized.to(table.dtype)


def _keys_of_roll(offsets: torch.Tensor, row_sign: int, col_sign: int) -> torch.Tensor:
    """Indices of the rolled keys (rows of ``rolled_neighbour_offsets``) of the roll with these signs."""
    return torch.nonzero((offsets[:, 2].sign() == row_sign) & (offsets[:, 3].sign() == col_sign)).view(-1)


def resize_position_tables(model: nn.Module, state: Mapping[str, torch.Tensor]
                           ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """A state dict with every position table whose shape differs from the model's resized to it.

    A table with another number of heads (a checkpoint of another model size) or a shape that is
    no table of this kind is left as it is, for the strict loader to report.

    Args:
        model (nn.Module): A backbone made of :class:`FocalTransformerBlock`.
        state (Mapping[str, torch.Tensor]): Its state dict from a checkpoint, official names.

    Returns:
        tuple[OrderedDict, list[str]]: The new state dict and, for each resized table,
        'key: old shape -> new shape'.
    """
    state = OrderedDict(state)
    own = model.state_dict()
    resized = []
    for prefix, block in model.named_modules():
        if not isinstance(block, FocalTransformerBlock):
            continue
        for name, key, target in _tables_of(prefix, block, own):
            table = state.get(key)
            if table is None or table.shape == target.shape:
                continue
            new = _resize(name, table, target, block.attn)
            if new is not None:
                state[key] = new
                resized.append(f'{key}: {tuple(table.shape)} -> {tuple(new.shape)}')
    return state, resized


def _tables_of(prefix: str, block: FocalTransformerBlock, own: Mapping[str, torch.Tensor]):
    """(name, state-dict key, the model's tensor) of each position table and pooling weight of ``block``."""
    levels = range(block.attn.num_pooled_levels)
    names = [f'attn.{WINDOW_TABLE}', f'attn.{NEIGHBOUR_TABLE}'] + [f'attn.{POOLED_TABLE}.{k}' for k in levels]
    names += [f'{POOLING_WEIGHT}.{k}.weight' for k in range(len(block.pool_layers))]
    for name in names:
        key = f'{prefix}.{name}' if prefix else name
        if key in own:
            yield name, key, own[key]


def _resize(name: str, table: torch.Tensor, target: torch.Tensor,
            module: FocalWindowAttention) -> Optional[torch.Tensor]:
    """``table`` resized to ``target``'s shape; None where it cannot be: another number of heads
    (a checkpoint of another model size), or a shape that is no table of this kind."""
    if not table.is_floating_point() or table.dim() != target.dim():
        return None
    if name.startswith(POOLING_WEIGHT):  # fc (1, cells) or conv (C, 1, n, n)
        square = table.shape[-1] == table.shape[-2] if table.dim() == 4 else _grid_side(table.shape[1])
        if table.shape[0] != target.shape[0] or not square:
            return None
        return resize_pooling_weight(table, target.shape[-1] if target.dim() == 4 else _grid_side(target.shape[1]))
    name = name[len('attn.'):]
    if name == WINDOW_TABLE:  # (cells, heads)
        if table.shape[1] != target.shape[1] or _grid_side(table.shape[0]) is None:
            return None
        return resize_grid_table(table.t(), _grid_side(target.shape[0])).t().contiguous()
    if name.startswith(POOLED_TABLE):  # (heads, cells)
        if table.shape[0] != target.shape[0] or _grid_side(table.shape[1]) is None:
            return None
        return resize_grid_table(table, _grid_side(target.shape[1]))
    if table.shape[1] != target.shape[1] or neighbour_table_geometry(table.shape) is None:
        return None
    return resize_neighbour_table(table, module.window_size, module.expand_size)
