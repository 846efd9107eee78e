"""The init-stage assigner of RepPointsV2 (the authors' ``PointAssignerV2``), in mmdet 3's
assigner API (``assign(pred_instances, gt_instances, ...) -> AssignResult``).

mmdet 3's own ``PointAssigner`` (RepPoints v1) measures the plain distance from a point to a box
centre and lets a point keep the nearer box; V2 measures it in units of the box's size, which is
what makes elongated boxes pick points along their long side.
"""
from typing import Optional

import torch
from mmdet.models.task_modules.assigners import AssignResult, BaseAssigner
from mmengine.structures import InstanceData

INF = 1e8


def box_levels(bboxes: torch.Tensor, scale: float, min_level: int, max_level: int) -> torch.Tensor:
    """The pyramid level (log2 of the stride) of each box.

    Args:
        bboxes (torch.Tensor): Boxes (x1, y1, x2, y2), shape (n, 4).
        scale (float): The box side that level 0 (stride 1) stands for.
        min_level (int): The lowest level there is.
        max_level (int): The highest level there is.

    Returns:
        torch.Tensor: The mean of log2(w / scale) and log2(h / scale), truncated, clamped to
        [min_level, max_level]; int, shape (n, ).
    """
    wh = (bboxes[:, 2:] - bboxes[:, :2]).clamp(min=1e-6)
    levels = (torch.log2(wh[:, 0] / scale) + torch.log2(wh[:, 1] / scale)) / 2
    return levels.int().clamp(min=min_level, max=max_level)


class PointAssignerV2(BaseAssigner):
    """Each box goes to the ``pos_num`` points of its level nearest its centre, the distance
    measured in box widths and heights; a point claimed by several boxes keeps the nearest
    (in those units). Every other point is negative.

    Args:
        scale (float): The box side that level 0 (stride 1) stands for; a box of side
            ``scale * 2**k`` belongs to stride ``2**k``. Defaults to 4, the authors'.
        pos_num (int): Points per box. Defaults to 1, the authors'.
    """

    def __init__(self, scale: float = 4, pos_num: int = 1) -> None:
        if pos_num < 1:
            raise ValueError(f'pos_num must be at least 1, got {pos_num}')
        self.scale = scale
        self.pos_num = pos_num

    def assign(self, pred_instances: InstanceData, gt_instances: InstanceData,
               gt_instances_ignore: Optional[InstanceData] = None, **kwargs) -> AssignResult:
        """The init-stage targets of one image.

        Args:
            pred_instances (InstanceData): ``priors``: the points (x, y, stride, ...) of all
                levels, shape (n, 3+).
            gt_instances (InstanceData): ``bboxes``, shape (k, 4), and ``labels``, shape (k, ).
            gt_instances_ignore (InstanceData, optional): Not used, as in the authors' assigner.
                Defaults to None.
            **kwargs: Other arguments of mmdet's assigners, not used.

        Returns:
            AssignResult: Per point, the 1-based index of its box (0: negative) and its label
            (-1: negative).
        """
        points = pred_instances.priors
        gt_bboxes = gt_instances.bboxes
        gt_labels = gt_instances.labels
        num_points, num_gts = points.size(0), gt_bboxes.size(0)
        assigned_gt_inds = points.new_zeros((num_points, ), dtype=torch.long)
        assigned_labels = points.new_full((num_points, ), -1, dtype=torch.long)
        if num_points == 0 or num_gts == 0:
            return AssignResult(num_gts, assigned_gt_inds, None, labels=assigned_labels)

        point_levels = torch.log2(points[:, 2]).int()
        gt_levels = box_levels(gt_bboxes, self.scale, int(point_levels.min()), int(point_levels.max()))
        centres = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
        sizes = (gt_bboxes[:, 2:] - gt_bboxes[:, :2]).clamp(min=1e-6)
        # (points, gts): distance in box units, infinite off the box's level
        distances = ((points[:, None, :2] - centres[None]) / sizes[None]).norm(dim=2)
        distances[point_levels[:, None] != gt_levels[None, :]] = INF

        nearest_dist, nearest_idx = distances.topk(min(self.pos_num, num_points), dim=0, largest=False)
        claimed = torch.full_like(distances, INF)
        claimed[nearest_idx, torch.arange(num_gts, device=points.device)] = nearest_dist
        best_dist, best_gt = claimed.min(dim=1)
        positive = best_dist < INF
        assigned_gt_inds[positive] = best_gt[positive] + 1
        assigned_labels[positive] = gt_labels[best_gt[positive]]
        return AssignResult(num_gts, assigned_gt_inds, None, labels=assigned_labels)
