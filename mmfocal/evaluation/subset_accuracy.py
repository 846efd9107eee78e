"""Top-1 accuracy of a classifier on named subsets of its test pictures.

An overall top-1 can hide a shortcut: a classifier that reads a cue most pictures share (the
demo's shapes in their class's typical colour, say) scores well overall and near chance on the
pictures without it. :class:`SubsetAccuracy` scores each subset apart, the subsets read from a
list file beside the data set's own list (``tools/make_demo_data.py`` writes
``imagenet/meta/val_colours.txt``).
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from ..errors import ConfigError, MissingFileError


def read_subsets(list_file: str) -> Dict[str, int]:
    """The subset of every picture a list file names.

    Args:
        list_file (str): One line per picture, ``<path> ... <subset>``: the picture's path
            relative to its split's folder (as in ImageNet's ``meta/val.txt``), any other
            columns, and last the picture's subset as an integer.

    Returns:
        dict[str, int]: Each picture's subset, by its path.

    Raises:
        MissingFileError: The list file is not there.
        ConfigError: A line without an integer subset last.
    """
    if not osp.isfile(list_file):
        raise MissingFileError(f'{list_file}: no such subset list (tools/make_demo_data.py writes it)')
    subsets = {}
    with open(list_file) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                subsets[fields[0]] = int(fields[-1])
            except (ValueError, IndexError):
                raise ConfigError(f'{list_file}:{number}: expected "<path> ... <subset>", '
                                  f'got {line.strip()!r}') from None
    return subsets


class SubsetAccuracy(BaseMetric):
    """Top-1 accuracy on each subset of the pictures of a data set in ImageNet's layout.

    In percent, as mmpretrain's ``Accuracy``; the pictures lie at ``<root>/<split>/<class>/<file>``.

    Args:
        list_name (str): The subset list's file name in ``<root>/meta/`` (see
            :func:`read_subsets`), ``{split}`` standing for the split's folder name:
            ``'{split}_colours.txt'`` reads ``<root>/meta/val_colours.txt`` for the pictures
            under ``<root>/val/``.
        subset_names (Sequence[str]): A name per subset number (0, 1, ...): the metric
            ``top1_<name>`` of each subset that has pictures.
        collect_device (str): As mmengine's ``BaseMetric``. Defaults to ``'cpu'``.
        prefix (str, optional): The metrics' prefix. Defaults to None (``'subset'``).

    Examples:
        >>> val_evaluator = [dict(type='Accuracy', topk=1),
        ...                  dict(type='SubsetAccuracy', list_name='{split}_colours.txt',
        ...                       subset_names=('atypical', 'typical'))]
    """
    default_prefix = 'subset'

    def __init__(self, list_name: str, subset_names: Sequence[str], collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.list_name = list_name
        self.subset_names = tuple(subset_names)
        self._lists: Dict[str, Dict[str, int]] = {}

    def subset_of(self, img_path: str) -> int:
        """The subset of the picture at ``img_path``, from its split's list.

        Raises:
            MissingFileError: The split has no list.
            ConfigError: The picture is not in it, or a subset has no name.
        """
        class_dir, file_name = osp.split(osp.normpath(img_path))
        split_dir, class_name = osp.split(class_dir)
        root, split = osp.split(split_dir)
        list_file = osp.join(root, 'meta', self.list_name.format(split=split))
        if list_file not in self._lists:
            subsets = read_subsets(list_file)
            unnamed = sorted(set(subsets.values()) - set(range(len(self.subset_names))))
            if unnamed:
                raise ConfigError(f'{list_file}: subset {unnamed[0]} has no name in {self.subset_names}')
            self._lists[list_file] = subsets
        key = f'{class_name}/{file_name}'
        if key not in self._lists[list_file]:
            raise ConfigError(f'{img_path}: not in {list_file}')
        return self._lists[list_file][key]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep each prediction's subset and whether its top-1 is right.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): The model's predictions, with ``pred_score`` or
                ``pred_label``, ``gt_label`` and ``img_path``.

        Raises:
            ConfigError: If an image is not in its subset list, or the list names a subset that
                ``subset_names`` does not.
        """
        for sample in data_samples:
            prediction = sample['pred_score'].argmax() if 'pred_score' in sample else sample['pred_label']
            correct = int(prediction.reshape(-1)[0]) == int(sample['gt_label'].reshape(-1)[0])
            self.results.append((self.subset_of(sample['img_path']), correct))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        """``top1_<name>`` of each subset that has pictures."""
        subsets = np.array([subset for subset, _ in results])
        correct = np.array([correct for _, correct in results], dtype=float)
        return {f'top1_{name}': round(float(correct[subsets == number].mean() * 100), 2)
                for number, name in enumerate(self.subset_names) if (subsets == number).any()}
