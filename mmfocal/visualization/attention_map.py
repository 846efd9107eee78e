"""Draw what one focal-attention query attends to, on the image (``tools/analysis/focal_attention_map.py``).

Input is a :class:`mmfocal.analysis.focal_keys.QueryKeys` (every key's square on the stage map and
its recorded weight). One panel per key group (window tokens, rolled neighbours, each pooled
level) coloured by the weight averaged over heads, then one panel per head with every group, each
group in its own colour map; the legend gives each group's share of the weight.
"""
from collections import defaultdict
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..analysis.focal_keys import QueryKeys

# One hue per group, in key order: fine tokens warm, rolled cool, pooled levels green onward.
GROUP_COLOURMAPS = ('Reds', 'Blues', 'Greens', 'Purples', 'Oranges', 'Greys')
_BASE_COLOUR = 0.75  # where on its colour map a group's legend swatch and outlines sit


def group_colourmaps(groups) -> List[str]:
    """The colour map of each key group.

    Args:
        groups (Sequence[KeyGroup]): The key groups, in key order.

    Returns:
        list[str]: A matplotlib colour map name per group: the fine groups by name, the pooled
        levels in order.
    """
    maps, pooled = [], iter(GROUP_COLOURMAPS[2:])
    for group in groups:
        if group.name in ('window tokens', 'nearest map tokens'):
            maps.append(GROUP_COLOURMAPS[0])
        elif group.name.startswith('rolled'):
            maps.append(GROUP_COLOURMAPS[1])
        else:
            maps.append(next(pooled, 'Greys'))
    return maps


def key_squares(keys: QueryKeys, group: int, weights: np.ndarray) -> List[Tuple[float, float, float, float]]:
    """The distinct squares of a group's on-map keys, with their weights.

    Args:
        keys (QueryKeys): The query's keys.
        group (int): The group, an index into ``keys.groups``.
        weights (np.ndarray): A weight per key, shape (num_keys, ).

    Returns:
        list[tuple[float, float, float, float]]: (top, left, size, weight) per square, in
        stage-map tokens; keys that share a square (the rolled neighbours' duplicates, a wrap
        onto a token already seen) add their weights.
    """
    summed = defaultdict(float)
    for k in np.flatnonzero((keys.group == group) & ~keys.off_map):
        summed[(keys.top[k], keys.left[k], keys.size[k])] += weights[k]
    return [(top, left, size, weight) for (top, left, size), weight in summed.items()]


def draw_attention_map(keys: QueryKeys, image: np.ndarray, stride: float, title: str,
                       point: Optional[Tuple[float, float]] = None, out_file: Optional[str] = None,
                       dpi: int = 100):
    """Draw one query's keys on the image: one panel per key group, then one per head.

    Args:
        keys (QueryKeys): The query's keys and weights.
        image (np.ndarray): RGB uint8, shape (H, W, 3): the picture as the model sees it
            (resized, unpadded).
        stride (float): Input pixels per stage-map token.
        title (str): The figure's title.
        point (tuple[float, float], optional): The query (x, y) in the image's pixels, marked
            with a star. Defaults to None.
        out_file (str, optional): Save the figure there. Defaults to None.
        dpi (int): The saved figure's resolution. Defaults to 100.

    Returns:
        matplotlib.figure.Figure: The figure.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    heads = keys.weights.shape[0]
    mean = keys.mean_weights()
    cmaps = group_colourmaps(keys.groups)
    panels = [('level', g) for g in range(len(keys.groups))] + [('head', h) for h in range(heads)]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.9 * rows + 1.4), squeeze=False,
                             layout='constrained')
    limits = _view_limits(keys, image.shape[:2], stride)
    for ax, (kind, which) in zip(axes.ravel(), panels):
        _draw_background(ax, keys, image, stride, limits)
        if kind == 'level':
            share = keys.mass_per_group()[which]
            mappable = _draw_group(ax, keys, which, mean, stride, cmaps[which], vmax=None)
            _draw_off_map(ax, keys, stride, group=which)
            ax.set_title(f'{keys.groups[which].name}: {share:.1%} of the weight\n(mean over {heads} '
                         f'head{"s" if heads > 1 else ""})', fontsize=10)
            colourbar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
            colourbar.set_label('attention weight per square', fontsize=8)
            colourbar.ax.tick_params(labelsize=7)
        else:
            weights = keys.weights[which]
            vmax = max([w for g in range(len(keys.groups)) for *_, w in key_squares(keys, g, weights)] + [1e-12])
            for g in _back_to_front(keys):
                _draw_group(ax, keys, g, weights, stride, cmaps[g], vmax=vmax)
            _draw_off_map(ax, keys, stride)
            shares = keys.mass_per_group(weights)
            ax.set_title(f'head {which}\n' + ', '.join(f'{_short(g.name)} {s:.0%}'
                                                        for g, s in zip(keys.groups, shares)), fontsize=10)
        _draw_query(ax, keys, stride, point)
        ax.set_xlim(limits[1])
        ax.set_ylim(limits[0][::-1])
        ax.set_aspect('equal')
        ax.set_xlabel('x (input pixels)', fontsize=8)
        ax.set_ylabel('y (input pixels)', fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis('off')
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(keys, cmaps), loc='outside lower center', ncol=min(4, cols),
               fontsize=9, frameon=False)
    if out_file:
        fig.savefig(out_file, dpi=dpi)
    return fig


def _short(name: str) -> str:
    short = {'window tokens': 'window', 'rolled neighbours': 'rolled', 'nearest map tokens': 'tokens',
             'nearest pooled windows': 'pooled'}
    if name.startswith('pooled level '):
        return name.replace('pooled level ', 'pooled (level ') + ')'
    return short.get(name, name)


def _back_to_front(keys: QueryKeys) -> Sequence[int]:
    """Coarse squares first, so the fine ones stay visible on top of them."""
    return sorted(range(len(keys.groups)), key=lambda g: -keys.size[keys.group == g].max())


def _view_limits(keys: QueryKeys, image_size, stride):
    """(y range, x range) in pixels holding the image, the padded map and every key (off-map too)."""
    top = np.minimum(keys.top, keys.nominal_top) * stride
    left = np.minimum(keys.left, keys.nominal_left) * stride
    bottom = np.maximum(keys.top, keys.nominal_top) * stride + keys.size * stride
    right = np.maximum(keys.left, keys.nominal_left) * stride + keys.size * stride
    y0, x0 = min(0, top.min()), min(0, left.min())
    y1 = max(image_size[0], keys.padded_size[0] * stride, bottom.max())
    x1 = max(image_size[1], keys.padded_size[1] * stride, right.max())
    margin = 0.02 * max(y1 - y0, x1 - x0)
    return (y0 - margin, y1 + margin), (x0 - margin, x1 + margin)


def _draw_background(ax, keys: QueryKeys, image, stride, limits):
    from matplotlib.patches import Rectangle
    ax.set_facecolor('#f4f4f4')
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0), alpha=0.55, interpolation='nearest', zorder=0)
    map_h, map_w = (s * stride for s in keys.map_size)
    pad_h, pad_w = (s * stride for s in keys.padded_size)
    if (pad_h, pad_w) != (map_h, map_w):  # the padding the windows need: zero tokens
        for x, y, w, h in ((map_w, 0, pad_w - map_w, pad_h), (0, map_h, map_w, pad_h - map_h)):
            if w > 0 and h > 0:
                ax.add_patch(Rectangle((x, y), w, h, facecolor='none', edgecolor='0.6', hatch='..',
                                       linewidth=0, zorder=0.5))
    ax.add_patch(Rectangle((0, 0), map_w, map_h, fill=False, edgecolor='0.2', linewidth=1, zorder=3))
    ax.add_patch(Rectangle((0, 0), pad_w, pad_h, fill=False, edgecolor='0.2', linewidth=0.8,
                           linestyle=':', zorder=3))


def _draw_group(ax, keys: QueryKeys, group: int, weights, stride, cmap_name: str, vmax: Optional[float]):
    """Fill the group's squares by weight; wrapped keys also get a dashed outline where the layout
    put them. Returns a ScalarMappable for a colour bar."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle
    squares = key_squares(keys, group, weights)
    vmax = vmax if vmax is not None else max([w for *_, w in squares] + [1e-12])
    norm, cmap = Normalize(0, vmax), plt.get_cmap(cmap_name)
    edge = cmap(_BASE_COLOUR)
    depth = 1 + 1.0 / max(1, np.median(keys.size[keys.group == group]))  # fine groups on top
    for top, left, size, weight in squares:
        ax.add_patch(Rectangle((left * stride, top * stride), size * stride, size * stride,
                               facecolor=cmap(norm(weight)), edgecolor=edge, linewidth=0.4,
                               alpha=0.75, zorder=depth, gid=f'key:{group}'))
    wrapped = np.flatnonzero((keys.group == group) & keys.wrapped)
    for k in wrapped:
        ax.add_patch(Rectangle((keys.nominal_left[k] * stride, keys.nominal_top[k] * stride),
                               keys.size[k] * stride, keys.size[k] * stride, fill=False, edgecolor=edge,
                               linewidth=0.6, linestyle='--', zorder=depth, gid=f'wrapped:{group}'))
    return ScalarMappable(norm=norm, cmap=cmap)


def _draw_off_map(ax, keys: QueryKeys, stride, group: Optional[int] = None):
    from matplotlib.patches import Rectangle
    chosen = keys.off_map if group is None else keys.off_map & (keys.group == group)
    for k in np.flatnonzero(chosen):
        ax.add_patch(Rectangle((keys.left[k] * stride, keys.top[k] * stride), keys.size[k] * stride,
                               keys.size[k] * stride, facecolor='none', edgecolor='0.45', hatch='xx',
                               linewidth=0.5, linestyle='--', zorder=0.8, gid='off_map'))


def _draw_query(ax, keys: QueryKeys, stride, point):
    from matplotlib.patches import Rectangle
    top, left, side = keys.window
    for colour, width in (('white', 3.2), ('black', 1.6)):
        ax.add_patch(Rectangle((left * stride, top * stride), side * stride, side * stride, fill=False,
                               edgecolor=colour, linewidth=width, zorder=5, gid='query_window'))
    row, col = keys.query
    ax.add_patch(Rectangle((col * stride, row * stride), stride, stride, fill=False, edgecolor='black',
                           linewidth=1.2, zorder=6, gid='query_token'))
    x, y = point if point is not None else ((col + 0.5) * stride, (row + 0.5) * stride)
    ax.plot([x], [y], marker='*', markersize=13, color='gold', markeredgecolor='black', zorder=7)


def _legend_handles(keys: QueryKeys, cmaps):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    shares = keys.mass_per_group()
    handles = []
    for g, (group, share, cmap_name) in enumerate(zip(keys.groups, shares, cmaps)):
        off = int((keys.off_map & (keys.group == g)).sum())
        label = f'{group.name}: {group.count} keys, {share:.1%} of the weight'
        if off:
            label += f' ({off} off the map)'
        repeats = group.count - off - len(key_squares(keys, g, keys.mean_weights()))
        if repeats:
            label += f' ({repeats} fetched twice: their squares add both)'
        handles.append(Patch(facecolor=plt.get_cmap(cmap_name)(_BASE_COLOUR), edgecolor='0.3', label=label))
    if keys.wrapped.any():
        handles.append(Patch(facecolor='none', edgecolor='0.3', linestyle='--',
                             label='rolled key before wrapping around the map border'))
    if keys.off_map.any():
        handles.append(Patch(facecolor='none', edgecolor='0.45', hatch='xx', linestyle='--',
                             label='pooled key off the map (weight 0)'))
    if tuple(keys.padded_size) != tuple(keys.map_size):
        handles.append(Patch(facecolor='none', edgecolor='0.6', hatch='..',
                             label='padding to whole windows (zero tokens)'))
    handles.append(Patch(facecolor='none', edgecolor='black', linewidth=1.6, label='query window'))
    handles.append(Line2D([], [], marker='*', markersize=12, color='gold', markeredgecolor='black',
                          linestyle='none', label='query point'))
    return handles
