"""Foreground-verification targets of RepPointsV2: per class, the cells of a stride-8 map that
some box of that class covers, each weighted by ``1 / area`` of the smallest such box.

The authors made these maps in the data pipeline (``LoadRPDV2Annotations``, at the padded
image's size / 8); here the head makes them from ``gt_instances`` at its first level's size, so
the data pipelines stay mmdet's own.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor


def foreground_targets(gt_bboxes: Tensor, gt_labels: Tensor, num_classes: int, map_size: Sequence[int],
                       stride: int = 8) -> Tuple[Tensor, Tensor]:
    """The foreground map of one image and its weights.

    A box (x1, y1, x2, y2) covers the cells ``floor(y1/stride) .. floor(y2/stride)`` by
    ``floor(x1/stride) .. floor(x2/stride)``, ends included. Larger boxes are drawn first, so
    where boxes overlap the weight is the smaller box's.

    Args:
        gt_bboxes (Tensor): Boxes (x1, y1, x2, y2) in pixels, shape (K, 4).
        gt_labels (Tensor): Their classes, shape (K, ), each in [0, num_classes).
        num_classes (int): Channels of the maps.
        map_size (Sequence[int]): The maps' (h, w).
        stride (int): Pixels per cell. Defaults to 8.

    Returns:
        tuple[Tensor, Tensor]: ``target`` (1 on covered cells, else 0) and ``weight``
        (``1 / area`` of the smallest box covering the cell, else 0), each of shape
        (num_classes, h, w).
    """
    height, width = map_size
    target = gt_bboxes.new_zeros((num_classes, height, width))
    weight = gt_bboxes.new_zeros((num_classes, height, width))
    if gt_bboxes.numel() == 0:
        return target, weight
    if int(gt_labels.min()) < 0 or int(gt_labels.max()) >= num_classes:
        raise ValueError(f'labels must be in [0, {num_classes}), got {gt_labels.tolist()}')
    areas = (gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (gt_bboxes[:, 3] - gt_bboxes[:, 1])
    cells = torch.div(gt_bboxes, stride, rounding_mode='floor').clamp(min=0).long().tolist()
    for index in torch.argsort(areas, descending=True).tolist():
        x1, y1, x2, y2 = cells[index]
        label = int(gt_labels[index])
        target[label, y1:y2 + 1, x1:x2 + 1] = 1
        weight[label, y1:y2 + 1, x1:x2 + 1] = 1 / areas[index].clamp(min=1.)
    return target, weight
