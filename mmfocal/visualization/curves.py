"""Learning curves of one or more training runs (``tools/analysis/plot_curves.py``).

One panel per quantity against the training iteration, every run in its own colour. A metric's
``_50``/``_75`` variants (COCO's mAP at IoU 0.5 and 0.75) share its panel as dashed and dotted
lines. Training values, logged every few iterations, are noisy: they are drawn faintly and with a
mean over ``smooth`` points around each on top.
"""
import re
from typing import List, Optional, Sequence

import numpy as np

from ..analysis.scalars import TrainingHistory

VARIANT = re.compile(r'_(50|75)$')
VARIANT_STYLES = {'': ('-', 'o'), '_50': ('--', 's'), '_75': (':', '^')}


def panel_keys(keys: Sequence[str]) -> List[List[str]]:
    """The panels of the curves: a key with ``_50``/``_75`` goes with its base key when asked too.

    Args:
        keys (Sequence[str]): The scalars to draw.

    Returns:
        list[list[str]]: The keys of each panel.
    """
    chosen = list(dict.fromkeys(keys))
    panels = []
    for key in chosen:
        base = VARIANT.sub('', key)
        if base != key and base in chosen:
            continue  # drawn in its base key's panel
        panels.append([key] + [k for k in chosen if k != key and VARIANT.sub('', k) == key])
    return panels


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """A running mean without lag.

    Args:
        values (np.ndarray): The series, shape (n, ).
        window (int): Points averaged, centred on each point (fewer at the ends); 1 or less: none.

    Returns:
        np.ndarray: The smoothed series, shape (n, ).
    """
    if window <= 1 or len(values) < 2:
        return values
    half = window // 2
    sums = np.cumsum(np.insert(np.asarray(values, float), 0, 0.0))
    ends = np.minimum(np.arange(len(values)) + half + 1, len(values))
    starts = np.maximum(np.arange(len(values)) - half, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_curves(histories: Sequence[TrainingHistory], keys: Sequence[str], out_file: Optional[str] = None,
                smooth: int = 5, title: Optional[str] = None, dpi: int = 100):
    """Draw the learning curves of one or more trainings.

    Args:
        histories (Sequence[TrainingHistory]): The trainings, one line each.
        keys (Sequence[str]): The scalars to draw, in panels as :func:`panel_keys` groups them.
        out_file (str, optional): Save the figure there. Defaults to None.
        smooth (int): Window of the running mean of the training scalars. Defaults to 5.
        title (str, optional): The figure's title. Defaults to None.
        dpi (int): The saved figure's resolution. Defaults to 100.

    Returns:
        matplotlib.figure.Figure: The figure.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = panel_keys(keys)
    if not panels:
        raise ValueError('nothing to plot: no keys given')
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows + 0.7), squeeze=False,
                             layout='constrained')
    colours = plt.get_cmap('tab10').colors
    for ax, group in zip(axes.ravel(), panels):
        variants = set()
        for run, history in enumerate(histories):
            colour = colours[run % len(colours)]
            for key in group:
                series = history.series(key)
                if series is None:
                    continue
                suffix = key[len(VARIANT.sub('', key)):]
                variants.add(suffix)
                iters, values = series
                style, marker = VARIANT_STYLES.get(suffix, ('-', 'o'))
                if key in history.train and key != 'lr':
                    ax.plot(iters, values, color=colour, alpha=0.25, linewidth=0.8)
                    ax.plot(iters, running_mean(values, smooth), color=colour, linestyle=style, linewidth=1.6)
                elif key in history.train:
                    ax.plot(iters, values, color=colour, linestyle=style, linewidth=1.6)
                else:
                    ax.plot(iters, values, color=colour, linestyle=style, marker=marker, markersize=3.5,
                            linewidth=1.4)
        ax.set_title(', '.join(group), fontsize=10)
        ax.set_xlabel('iteration', fontsize=9)
        ax.set_ylabel(_y_label(group[0]), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if group[0] == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
        if len(variants) > 1:
            ax.legend(handles=[Line2D([], [], color='0.3', linestyle=VARIANT_STYLES[v][0], marker=VARIANT_STYLES[v][1],
                                      markersize=3.5, label=VARIANT.sub('', group[0]) + v) for v in sorted(variants)],
                      fontsize=7, loc='best')
        if not ax.lines:
            ax.text(0.5, 0.5, 'not logged by these runs', ha='center', va='center', transform=ax.transAxes,
                    fontsize=9, color='0.4')
    for ax in axes.ravel()[len(panels):]:
        ax.axis('off')
    run_handles = [Line2D([], [], color=colours[i % len(colours)], linewidth=2, label=h.name)
                   for i, h in enumerate(histories)]
    fig.legend(handles=run_handles, loc='outside lower center', ncol=min(4, len(histories)), fontsize=9,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    if out_file:
        fig.savefig(out_file, dpi=dpi)
    return fig


def _y_label(key: str) -> str:
    if key == 'lr':
        return 'learning rate'
    if key.startswith('loss'):
        return f'{key} (training)'
    return f'{VARIANT.sub("", key)} (validation)'
