"""Corner-verification targets of RepPointsV2 (the authors' ``PointHMAssigner``).

For every level, every box corner (top-left and bottom-right) makes:

* a heat-map target: 1 at the grid point nearest the corner; elsewhere, within the CornerNet
  radius of the corner (the radius at which a box whose corner is that far off still has IoU
  ``gaussian_iou`` with the box), ``exp(-d**2 / (2 sigma**2))`` with ``sigma = (2 r + 1) / 6``,
  distances in pixels; 0 beyond; the highest value where boxes overlap;
* an offset target at that nearest point: ``(corner - point) / stride``, x then y.

Every level gets every box (the heat maps are not split by object size). It is not an
assigner in mmdet 3's sense (no ``AssignResult``): it returns the target maps.
"""
from typing import NamedTuple

import torch
from torch import Tensor


class CornerTargets(NamedTuple):
    """Targets of n points; channel 0 / columns 0-1 are the top-left corner, 1 / 2-3 the
    bottom-right."""
    heatmap: Tensor  # (n, 2) in [0, 1]
    offset: Tensor  # (n, 4): (dx, dy) top-left, (dx, dy) bottom-right, in strides
    positive: Tensor  # (n, 2) bool: the heat map is 1 (the offset is set)


def gaussian_radius(heights: Tensor, widths: Tensor, min_overlap: float) -> Tensor:
    """CornerNet's radius of n boxes, mmdet's ``gaussian_radius`` on tensors.

    Args:
        heights (Tensor): The boxes' heights in pixels, shape (n, ).
        widths (Tensor): Their widths, shape (n, ).
        min_overlap (float): The IoU a box must keep.

    Returns:
        Tensor: The smallest of the three corner displacements at which each box keeps IoU
        ``min_overlap`` (one corner moved, both moved inwards, both outwards), shape (n, ).
    """
    a1, b1 = 1, heights + widths
    c1 = widths * heights * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1**2 - 4 * a1 * c1)) / (2 * a1)
    a2, b2 = 4, 2 * (heights + widths)
    c2 = (1 - min_overlap) * widths * heights
    r2 = (b2 - torch.sqrt(b2**2 - 4 * a2 * c2)) / (2 * a2)
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (heights + widths)
    c3 = (min_overlap - 1) * widths * heights
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / (2 * a3)
    return torch.stack([r1, r2, r3], dim=1).min(dim=1).values


class CornerHeatmapAssigner:
    """Heat-map and offset targets for the corners of the boxes (see the module docstring).

    Args:
        gaussian_iou (float): The IoU that sets the Gaussian's radius, in (0, 1).
            Defaults to 0.7, the authors'.
    """

    def __init__(self, gaussian_iou: float = 0.7) -> None:
        if not 0 < gaussian_iou < 1:
            raise ValueError(f'gaussian_iou must be in (0, 1), got {gaussian_iou}')
        self.gaussian_iou = gaussian_iou

    def assign(self, points: Tensor, gt_bboxes: Tensor) -> CornerTargets:
        """The corner targets of one image.

        Args:
            points (Tensor): The grid points of all levels, (x, y, stride, ...), shape (n, 3+).
            gt_bboxes (Tensor): Boxes (x1, y1, x2, y2) in pixels, shape (k, 4).

        Returns:
            CornerTargets: The heat map, offset and positive targets of the n points.
        """
        num_points = points.size(0)
        heatmap = points.new_zeros((num_points, 2))
        offset = points.new_zeros((num_points, 4))
        if num_points == 0 or gt_bboxes.size(0) == 0:
            return CornerTargets(heatmap, offset, heatmap.eq(1))

        widths = gt_bboxes[:, 2] - gt_bboxes[:, 0]
        heights = gt_bboxes[:, 3] - gt_bboxes[:, 1]
        radius = gaussian_radius(heights, widths, self.gaussian_iou)
        sigma = (2 * radius + 1) / 6
        strides = points[:, 2]
        for stride in strides.unique():
            on_level = torch.nonzero(strides == stride).squeeze(1)
            level_xy = points[on_level, :2]
            for corner, corner_xy in enumerate((gt_bboxes[:, :2], gt_bboxes[:, 2:])):
                distances = torch.cdist(level_xy, corner_xy)  # (level points, boxes)
                gaussian = torch.exp(-distances**2 / (2 * sigma**2)[None])
                gaussian[distances >= radius[None]] = -1
                peak = gaussian.max(dim=1).values
                inside = peak >= 0
                heatmap[on_level[inside], corner] = peak[inside]
                nearest = distances.argmin(dim=0)  # per box
                offset[on_level[nearest], 2 * corner:2 * corner + 2] = (corner_xy - level_xy[nearest]) / stride
                heatmap[on_level[nearest], corner] = 1
        return CornerTargets(heatmap, offset, heatmap.eq(1))
