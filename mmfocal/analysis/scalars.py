"""Read the training history mmengine logs: ``<work_dir>/<timestamp>/vis_data/scalars.json``.

mmengine's LoggerHook writes one JSON object a line through the LocalVisBackend: training lines
(``lr``, the loss terms, ``time``..., with ``step`` = iteration and, for epoch-based loops,
``epoch``), and validation lines (the metrics, ``step`` = the epoch for epoch-based loops with
``log_metric_by_epoch``, the iteration otherwise). Everything here is put on one axis, the
training iteration. A work dir trained more than once (``--resume``) has one timestamped folder
per run; they are read in order and a later run's values replace an earlier one's at the same
iteration.
"""
import glob
import json
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

# Bookkeeping, not curves.
NOT_CURVES = frozenset({'step', 'epoch', 'iter', 'time', 'data_time', 'memory'})
# COCO's breakdown by object size (mAP_s/m/l): -1 where no object has that size; left out by default.
SIZE_BREAKDOWN = re.compile(r'_(s|m|l)$')


@dataclass
class TrainingHistory:
    """The scalars of one work dir, on the axis of training iterations.

    Attributes:
        name (str): What the history is called in a legend (the work dir's name by default).
        train (dict[str, tuple[np.ndarray, np.ndarray]]): Each training scalar's (iterations,
            values).
        val (dict[str, tuple[np.ndarray, np.ndarray]]): Each validation metric's (iterations,
            values).
        iters_per_epoch (int, optional): An epoch's length, for epoch-based training.
        files (list[str]): The scalars.json files read, oldest run first.
    """
    name: str
    train: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    val: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    iters_per_epoch: Optional[int] = None
    files: List[str] = field(default_factory=list)

    def series(self, key: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(iterations, values) of a training scalar or validation metric, or None."""
        return self.train.get(key, self.val.get(key))

    @property
    def keys(self) -> List[str]:
        """The training scalars, then the validation metrics not among them."""
        return list(self.train) + [k for k in self.val if k not in self.train]


def scalar_files(path: str) -> List[str]:
    """The scalars.json files of a training.

    Args:
        path (str): A work dir, one run's folder in it, or a scalars.json file.

    Returns:
        list[str]: The files, oldest run first.

    Raises:
        FileNotFoundError: ``path`` is not there, or holds no scalars.json.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path}: no such work dir or scalars.json file')
    found = sorted(glob.glob(osp.join(path, 'vis_data', 'scalars.json')) +
                   glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    found = [f for f in found if osp.getsize(f) > 0]
    if not found:
        raise FileNotFoundError(f"{path}: no vis_data/scalars.json in it or its run folders (mmengine's "
                                'LocalVisBackend writes them while training)')
    return found


def _read_lines(path: str) -> List[dict]:
    with open(path) as file:
        lines = [line.strip() for line in file]
    lines = [line for line in lines if line]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # a run killed while writing: drop the torn last line
                break
            raise ValueError(f'{path}: line {number} is not JSON ({error})') from None
    return records


def load_history(path: str, name: Optional[str] = None) -> TrainingHistory:
    """The training history of a work dir.

    Args:
        path (str): A work dir, one run's folder in it, or a scalars.json file.
        name (str, optional): The history's name. Defaults to None, the base name of ``path``.

    Returns:
        TrainingHistory: Every logged scalar, on the axis of training iterations.

    Raises:
        FileNotFoundError: ``path`` holds no scalars.json.
        ValueError: A file holds no logged values, or a line (but a torn last one) that is not
            JSON.
    """
    files = scalar_files(path)
    train_lines, val_lines = [], []
    for file in files:
        for record in _read_lines(file):
            if 'step' not in record:
                continue
            (train_lines if 'lr' in record or 'loss' in record else val_lines).append(record)
    if not train_lines and not val_lines:
        raise ValueError(f'{path}: its scalars.json files hold no logged values')
    history = TrainingHistory(name or osp.basename(osp.normpath(path)), files=files)
    by_epoch = any('epoch' in r for r in train_lines)
    if by_epoch:
        history.iters_per_epoch = _iters_per_epoch(train_lines)
    history.train = _collect(train_lines, lambda step: step)
    scale = history.iters_per_epoch if by_epoch and history.iters_per_epoch else 1
    history.val = _collect(val_lines, lambda step: step * scale)
    return history


def _iters_per_epoch(train_lines: List[dict]) -> Optional[int]:
    """An epoch's length, from where the logger's interval fell in consecutive epochs: mmengine logs
    epoch-based training every ``interval`` iterations *within* the epoch, so the first line of
    each epoch sits at the same place in it."""
    first = {}
    for record in train_lines:
        first.setdefault(record['epoch'], record['step'])
    epochs = sorted(first)
    lengths = [(first[b] - first[a]) / (b - a) for a, b in zip(epochs, epochs[1:])]
    if lengths:
        return int(round(float(np.median(lengths))))
    last = max(r['step'] for r in train_lines)  # one epoch logged: at least this long
    return last


def _collect(records: List[dict], to_iteration) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    series: Dict[str, Dict[float, float]] = {}
    for record in records:
        x = to_iteration(record['step'])
        for key, value in record.items():
            if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            series.setdefault(key, {})[x] = float(value)  # a later run replaces an earlier one
    return {key: (np.array(sorted(points)), np.array([points[x] for x in sorted(points)]))
            for key, points in series.items()}


def default_keys(histories: List[TrainingHistory]) -> List[str]:
    """The curves worth drawing by default.

    Args:
        histories (list[TrainingHistory]): The histories to draw.

    Returns:
        list[str]: The total loss, the learning rate and the validation metrics (not COCO's
        per-size mAP, not metrics that are -1 throughout).
    """
    keys = [k for k in ('loss', 'lr') if any(k in h.train for h in histories)]
    for history in histories:
        for key, (_, values) in history.val.items():
            if key in keys or SIZE_BREAKDOWN.search(key) or np.all(values == -1):
                continue
            keys.append(key)
    return keys
