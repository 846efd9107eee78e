"""RepPointsV2 (Chen et al., *RepPoints V2: Verification Meets Regression for Object Detection*,
NeurIPS 2020) for mmdet 3.3.

RepPoints regresses, at every point of every FPN level, a set of 9 points in two steps: an init
set from a plain conv, then a refinement through deformable convs that sample the features at
the init points (the classification uses the same samples). V2 adds two *verification* tasks on
a shared branch, and feeds them back into the regression:

* **corner verification**: for the top-left and the bottom-right corner, a heat map (is there a
  box corner here?) and a sub-stride offset, from CornerNet-style corner pooling;
* **foreground verification**: a per-class map of the cells inside a box of that class;
* **fusion**: the foreground branch's embedding is added to the classification, regression and
  corner features; the corner maps (2 scores + 4 offsets) are concatenated to the features the
  deformable convs sample; at test time, the corners of each box from levels 2-5 move to the
  best-scoring corner cell of the 2x2 around them on a finer level's heat map, plus its offset.

The box is the first two of the 9 points (``transform_method='exact_minmax'``): point 1 is the
top-left corner, point 2 the bottom-right; the other 7 only choose where to sample.

Targets: the init points by ``PointAssignerV2`` (the box's level's point nearest its centre),
the refined points and the classes by mmdet's ``ATSSAssigner`` on the init boxes, the corners by
``CornerHeatmapAssigner``, the foreground by ``foreground_targets``.

docs/det_results.md lists where this port differs from the authors' mmdet 2 code
(Scalsol/RepPointsV2), and why.
"""
import inspect
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.ops import CornerPool
from mmdet.models.dense_heads import RepPointsHead
from mmdet.models.utils import filter_scores_and_topk, images_to_levels, multi_apply, unmap
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import ConfigType, InstanceList, MultiConfig, OptConfigType, OptInstanceList
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..task_modules import foreground_targets
from .deform_conv import SampledDeformConv2d

# Corner and offset maps: 1 score channel per corner, 2 offset channels (x, y) per corner.
CORNER_MAP_CHANNELS = 2 + 4


class CornerPoolBranch(BaseModule):
    """The features of one corner (the authors' TLPool / BRPool, CornerNet's corner pooling).

    Two convs narrow the input, each is max-pooled towards one side (for the top-left corner:
    from the bottom up and from the right leftwards), the sum is widened again, added to a 1x1
    skip path, and a last conv mixes it.

    Args:
        channels (int): Input and output channels.
        directions (tuple[str, str]): The two ``CornerPool`` modes.
        corner_channels (int): The narrowed width. Defaults to 64, the authors'.
        first_kernel_size (int): Kernel of the narrowing convs. Defaults to 3, the authors'.
        kernel_size (int): Kernel of the last conv. Defaults to 1, the authors'.
        conv_cfg (dict, optional): The convs' config. Defaults to None (``Conv2d``).
        norm_cfg (dict): The norms' config. Defaults to GN with 32 groups.
        init_cfg (dict | list[dict], optional): Initialisation. Defaults to None.

    Shapes:
        - Input: (N, channels, H, W).
        - Output: (N, channels, H, W).
    """

    def __init__(self, channels: int, directions: Tuple[str, str], corner_channels: int = 64,
                 first_kernel_size: int = 3, kernel_size: int = 1, conv_cfg: OptConfigType = None,
                 norm_cfg: ConfigType = dict(type='GN', num_groups=32, requires_grad=True),
                 init_cfg: MultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.narrow_convs = nn.ModuleList([
            ConvModule(channels, corner_channels, first_kernel_size, padding=(first_kernel_size - 1) // 2,
                       conv_cfg=conv_cfg, norm_cfg=norm_cfg) for _ in directions
        ])
        self.pools = nn.ModuleList([CornerPool(direction) for direction in directions])
        # both sums are normalised, not activated, before they meet
        self.widen_conv = ConvModule(corner_channels, channels, 3, padding=1, conv_cfg=conv_cfg,
                                     norm_cfg=norm_cfg, act_cfg=None)
        self.skip_conv = ConvModule(channels, channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
        self.relu = nn.ReLU(inplace=True)
        self.out_conv = ConvModule(channels, channels, kernel_size, padding=(kernel_size - 1) // 2,
                                   conv_cfg=conv_cfg, norm_cfg=norm_cfg)

    def forward(self, x: Tensor) -> Tensor:
        """Pool the features towards the corner.

        Args:
            x (Tensor): Features, shape (N, channels, H, W).

        Returns:
            Tensor: The corner's features, shape (N, channels, H, W).
        """
        pooled = sum(pool(conv(x)) for conv, pool in zip(self.narrow_convs, self.pools))
        return self.out_conv(self.relu(self.widen_conv(pooled) + self.skip_conv(x)))


def snap_corners(corners: Tensor, heatmap_logits: Tensor, offsets: Tensor, stride: int) -> Tensor:
    """Move box corners to the best corner cell near them (RepPointsV2's test-time fusion).

    Each corner (x, y) in pixels falls in the 2x2 window of cells whose top-left cell is
    ``(floor(x / stride), floor(y / stride))`` (clamped to the map); it moves to the window's
    highest-scoring cell plus the offset predicted there, times the stride.

    Args:
        corners (Tensor): (x, y) in pixels, shape (n, 2).
        heatmap_logits (Tensor): The corner's heat map (logits), shape (H, W), H and W at least 2.
        offsets (Tensor): The corner's offsets (x, y) in strides, shape (2, H, W).
        stride (int): The map's stride.

    Returns:
        Tensor: The moved corners in pixels, shape (n, 2).
    """
    height, width = heatmap_logits.shape
    if height < 2 or width < 2:
        raise ValueError(f'a corner heat map needs at least 2x2 cells, got {height}x{width}')
    _, argmax = F.max_pool2d_with_indices(heatmap_logits.sigmoid()[None, None], kernel_size=2, stride=1)
    argmax = argmax[0, 0]  # (H - 1, W - 1): flat indices into the (H, W) map
    col = torch.floor(corners[:, 0] / stride).clamp(min=0, max=width - 2).long()
    row = torch.floor(corners[:, 1] / stride).clamp(min=0, max=height - 2).long()
    best = argmax[row, col]
    best_row, best_col = best // width, best % width
    snapped_x = (best_col.to(corners.dtype) + offsets[0, best_row, best_col]) * stride
    snapped_y = (best_row.to(corners.dtype) + offsets[1, best_row, best_col]) * stride
    return torch.stack([snapped_x, snapped_y], dim=1)


class RepPointsV2Head(RepPointsHead):
    """RepPointsV2's head: RepPoints with corner and foreground verification (module docstring).

    Defaults are the authors'. Other keyword arguments are ``RepPointsHead``'s
    (``use_grid_points=True`` is refused: V2 never used it).

    Args:
        num_classes (int): Object classes.
        in_channels (int): Channels of each FPN level.
        shared_stacked_convs (int): Convs of the verification branch, after the regression convs.
            Defaults to 1.
        first_kernel_size (int): Kernel of the corner pooling's narrowing convs
            (:class:`CornerPoolBranch`). Defaults to 3.
        kernel_size (int): Kernel of the corner pooling's last conv. Defaults to 1.
        corner_dim (int): The corner pooling's narrowed width. Defaults to 64.
        corner_source_levels (Sequence[int]): For each level, the level whose corner maps refine
            its boxes at test time, -1 for none. Defaults to (-1, 0, 0, 1, 1): strides 16 and 32
            from stride 8, 64 and 128 from 16, stride 8 not refined.
        loss_bbox_init (dict): The init boxes' loss. Defaults to GIoU, weight 1.
        loss_bbox_refine (dict): The refined boxes' loss. Defaults to GIoU, weight 2.
        loss_heatmap (dict): The corner heat maps' loss. Defaults to a Gaussian focal loss,
            weight 0.25.
        loss_offset (dict): The corner offsets' loss. Defaults to smooth L1 (beta 1/9), weight 1.
        loss_sem (dict): The foreground loss. Defaults to :class:`SeparateFocalLoss`, weight 0.1.
        transform_method (str): Points to boxes: ``'exact_minmax'``, the first two points are the
            top-left and bottom-right corners. Defaults to ``'exact_minmax'``.
        init_cfg (dict | list[dict]): Initialisation. Defaults to normal (std 0.01) convs, the
            score outputs with a prior probability of 0.01.
        **kwargs: ``RepPointsHead``'s other arguments.

    Shapes (per level, from ``forward``):
        - class logits: (N, num_classes, H, W);
        - init and refined points: (N, 2 * num_points, H, W), (dy, dx) pairs in strides from
          the grid point;
        - corner heat-map logits: (N, 2, H, W) (top-left, bottom-right);
        - corner offsets: (N, 4, H, W);
        - foreground logits: (N, num_classes, H, W).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 shared_stacked_convs: int = 1,
                 first_kernel_size: int = 3,
                 kernel_size: int = 1,
                 corner_dim: int = 64,
                 corner_source_levels: Sequence[int] = (-1, 0, 0, 1, 1),
                 loss_bbox_init: ConfigType = dict(type='GIoULoss', loss_weight=1.0),
                 loss_bbox_refine: ConfigType = dict(type='GIoULoss', loss_weight=2.0),
                 loss_heatmap: ConfigType = dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0, loss_weight=0.25),
                 loss_offset: ConfigType = dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0),
                 loss_sem: ConfigType = dict(type='SeparateFocalLoss', gamma=2.0, alpha=0.25, loss_weight=0.1),
                 transform_method: str = 'exact_minmax',
                 init_cfg: MultiConfig = dict(
                     type='Normal',
                     layer=['Conv2d', 'DeformConv2d'],
                     std=0.01,
                     override=[
                         dict(type='Normal', name=name, std=0.01, bias_prob=0.01)
                         for name in ('reppoints_cls_out', 'corner_tl_score_out', 'corner_br_score_out',
                                      'fg_score_out')
                     ]),
                 **kwargs) -> None:
        if kwargs.get('use_grid_points', False):
            raise ValueError('RepPointsV2Head regresses point sets (use_grid_points=False)')
        # _init_layers (called by the parent's __init__) needs these
        self.shared_stacked_convs = shared_stacked_convs
        self.first_kernel_size = first_kernel_size
        self.kernel_size = kernel_size
        self.corner_dim = corner_dim
        super().__init__(num_classes, in_channels, loss_bbox_init=loss_bbox_init,
                         loss_bbox_refine=loss_bbox_refine, transform_method=transform_method,
                         init_cfg=init_cfg, **kwargs)
        if not self.use_sigmoid_cls:
            raise ValueError('RepPointsV2Head scores classes with sigmoids (loss_cls.use_sigmoid=True)')
        if len(corner_source_levels) != len(self.point_strides) or any(
                not -1 <= source < len(self.point_strides) for source in corner_source_levels):
            raise ValueError(f'corner_source_levels {tuple(corner_source_levels)} must name, for each of the '
                             f'{len(self.point_strides)} levels, a level index or -1')
        self.corner_source_levels = tuple(corner_source_levels)
        if self.train_cfg:
            self.corner_assigner = TASK_UTILS.build(self.train_cfg['heatmap']['assigner'])
        self.loss_heatmap = MODELS.build(loss_heatmap)
        self.loss_offset = MODELS.build(loss_offset)
        self.loss_sem = MODELS.build(loss_sem)

    # ------------------------------------------------------------------ layers and forward
    def _init_layers(self) -> None:
        """RepPoints' towers, the shared verification tower, the corner and foreground branches,
        and the deformable convs widened by the corner maps they are given."""

        def conv_tower(num_convs: int, first_channels: int) -> nn.ModuleList:
            """A stack of 3x3 convs of ``feat_channels`` outputs.

            Args:
                num_convs (int): How many convs.
                first_channels (int): Input channels of the first conv.

            Returns:
                nn.ModuleList: The convs.
            """
            return nn.ModuleList([
                ConvModule(first_channels if i == 0 else self.feat_channels, self.feat_channels, 3, padding=1,
                           conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg) for i in range(num_convs)
            ])

        self.relu = nn.ReLU(inplace=True)
        self.cls_convs = conv_tower(self.stacked_convs, self.in_channels)
        self.reg_convs = conv_tower(self.stacked_convs, self.in_channels)
        self.shared_convs = conv_tower(self.shared_stacked_convs, self.feat_channels)

        corner_args = dict(corner_channels=self.corner_dim, first_kernel_size=self.first_kernel_size,
                           kernel_size=self.kernel_size, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg)
        self.corner_tl = CornerPoolBranch(self.feat_channels, ('top', 'left'), **corner_args)
        self.corner_br = CornerPoolBranch(self.feat_channels, ('bottom', 'right'), **corner_args)
        self.corner_tl_score_out = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.corner_br_score_out = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.corner_tl_offset_out = nn.Conv2d(self.feat_channels, 2, 3, padding=1)
        self.corner_br_offset_out = nn.Conv2d(self.feat_channels, 2, 3, padding=1)

        self.fg_score_out = nn.Conv2d(self.feat_channels, self.cls_out_channels, 1)
        self.fg_embedding = ConvModule(self.feat_channels, self.feat_channels, 1, conv_cfg=self.conv_cfg,
                                       norm_cfg=self.norm_cfg)

        pts_out_dim = 2 * self.num_points
        fused_channels = self.feat_channels + CORNER_MAP_CHANNELS
        self.reppoints_cls_conv = SampledDeformConv2d(fused_channels, self.point_feat_channels, self.dcn_kernel, 1,
                                               self.dcn_pad)
        self.reppoints_cls_out = nn.Conv2d(self.point_feat_channels, self.cls_out_channels, 1)
        self.reppoints_pts_init_conv = nn.Conv2d(self.feat_channels, self.point_feat_channels, 3, padding=1)
        self.reppoints_pts_init_out = nn.Conv2d(self.point_feat_channels, pts_out_dim, 1)
        self.reppoints_pts_refine_conv = SampledDeformConv2d(fused_channels, self.point_feat_channels, self.dcn_kernel,
                                                      1, self.dcn_pad)
        self.reppoints_pts_refine_out = nn.Conv2d(self.point_feat_channels, pts_out_dim, 1)

    def points2bbox(self, pts: Tensor, y_first: bool = True) -> Tensor:
        """Point sets to boxes (x1, y1, x2, y2).

        With ``exact_minmax``, the first point is the top-left corner and the second the bottom-right;
        the other transforms are mmdet's.

        Args:
            pts (Tensor): Point sets, shape (n, 2 * num_points, ...).
            y_first (bool): Whether each point is (y, x) rather than (x, y). Defaults to True.

        Returns:
            Tensor: Boxes, shape (n, 4, ...).
        """
        if self.transform_method != 'exact_minmax':
            return super().points2bbox(pts, y_first)
        pairs = pts.view(pts.shape[0], -1, 2, *pts.shape[2:])[:, :2]  # (n, 2 points, 2 coords, ...)
        ys, xs = (pairs[:, :, 0], pairs[:, :, 1]) if y_first else (pairs[:, :, 1], pairs[:, :, 0])
        return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)

    def forward(self, feats: Tuple[Tensor]) -> Tuple[List[Tensor], ...]:
        """The head's outputs for each FPN level; the same six in training and testing.

        Args:
            feats (tuple[Tensor]): FPN features, each shape (N, in_channels, H, W).

        Returns:
            tuple[list[Tensor], ...]: Per level: class logits, init points, refined points, corner
            heat-map logits, corner offsets and foreground logits (shapes in the class docstring).
        """
        return multi_apply(self.forward_single, feats)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The head's six outputs for one FPN level.

        Args:
            x (Tensor): Features of the level, shape (N, in_channels, H, W).

        Returns:
            tuple[Tensor, ...]: Class logits (N, num_classes, H, W), init and refined points
            (N, 2 * num_points, H, W), corner heat-map logits (N, 2, H, W), corner offsets
            (N, 4, H, W) and foreground logits (N, num_classes, H, W).
        """
        dcn_base_offset = self.dcn_base_offset.type_as(x)
        cls_feat, pts_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            pts_feat = conv(pts_feat)
        shared_feat = pts_feat
        for conv in self.shared_convs:
            shared_feat = conv(shared_feat)

        # foreground verification, and its embedding into every other branch
        fg_score = self.fg_score_out(shared_feat)
        fg_feat = self.fg_embedding(shared_feat)
        cls_feat = cls_feat + fg_feat
        pts_feat = pts_feat + fg_feat
        corner_feat = shared_feat + fg_feat

        # corner verification
        tl_feat, br_feat = self.corner_tl(corner_feat), self.corner_br(corner_feat)
        corner_score = torch.cat([self.corner_tl_score_out(tl_feat), self.corner_br_score_out(br_feat)], dim=1)
        corner_offset = torch.cat([self.corner_tl_offset_out(tl_feat), self.corner_br_offset_out(br_feat)], dim=1)

        # init points from the grid point; the refinement sees 1/gradient_mul of their gradient
        pts_out_init = self.reppoints_pts_init_out(self.relu(self.reppoints_pts_init_conv(pts_feat)))
        pts_out_init_grad_mul = (1 - self.gradient_mul) * pts_out_init.detach() + self.gradient_mul * pts_out_init
        dcn_offset = pts_out_init_grad_mul - dcn_base_offset

        # the deformable convs sample the features and the corner maps at the init points
        corner_maps = torch.cat([corner_score, corner_offset], dim=1)
        cls_out = self.reppoints_cls_out(
            self.relu(self.reppoints_cls_conv(torch.cat([cls_feat, corner_maps], dim=1), dcn_offset)))
        pts_out_refine = self.reppoints_pts_refine_out(
            self.relu(self.reppoints_pts_refine_conv(torch.cat([pts_feat, corner_maps], dim=1), dcn_offset)))
        pts_out_refine = pts_out_refine + pts_out_init.detach()
        return cls_out, pts_out_init, pts_out_refine, corner_score, corner_offset, fg_score

    # ------------------------------------------------------------------ targets
    def _get_targets_single(self, flat_proposals: Tensor, valid_flags: Tensor, num_level_proposals: List[int],
                            gt_instances: InstanceData, gt_instances_ignore: Optional[InstanceData],
                            stage: str = 'init', unmap_outputs: bool = True) -> tuple:
        """``RepPointsHead._get_targets_single`` that also gives the assigner the number of
        valid proposals per level when it asks for them (``ATSSAssigner``, the refine stage)."""
        if not valid_flags.any():
            raise ValueError('There is no valid proposal inside the image boundary. Please check the image size.')
        proposals = flat_proposals[valid_flags]
        pred_instances = InstanceData(priors=proposals)
        assigner = self.init_assigner if stage == 'init' else self.refine_assigner
        pos_weight = self.train_cfg[stage]['pos_weight']
        if 'num_level_priors' in inspect.signature(assigner.assign).parameters:
            num_level_valid = [int(flags.sum()) for flags in torch.split(valid_flags, num_level_proposals)]
            assign_result = assigner.assign(pred_instances, num_level_valid, gt_instances, gt_instances_ignore)
        else:
            assign_result = assigner.assign(pred_instances, gt_instances, gt_instances_ignore)
        sampling_result = self.sampler.sample(assign_result, pred_instances, gt_instances)

        num_valid = proposals.shape[0]
        bbox_gt = proposals.new_zeros([num_valid, 4])
        bbox_weights = proposals.new_zeros([num_valid, 4])
        labels = proposals.new_full((num_valid, ), self.num_classes, dtype=torch.long)
        label_weights = proposals.new_zeros(num_valid, dtype=torch.float)
        pos_inds, neg_inds = sampling_result.pos_inds, sampling_result.neg_inds
        if len(pos_inds) > 0:
            bbox_gt[pos_inds] = sampling_result.pos_gt_bboxes
            bbox_weights[pos_inds] = 1.0
            labels[pos_inds] = sampling_result.pos_gt_labels
            label_weights[pos_inds] = 1.0 if pos_weight <= 0 else pos_weight
        if len(neg_inds) > 0:
            label_weights[neg_inds] = 1.0
        if unmap_outputs:
            total = flat_proposals.size(0)
            labels = unmap(labels, total, valid_flags, fill=self.num_classes)
            label_weights = unmap(label_weights, total, valid_flags)
            bbox_gt = unmap(bbox_gt, total, valid_flags)
            bbox_weights = unmap(bbox_weights, total, valid_flags)
        return labels, label_weights, bbox_gt, bbox_weights, sampling_result

    def get_targets(self, proposals_list: List[List[Tensor]], valid_flag_list: List[List[Tensor]],
                    batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                    batch_gt_instances_ignore: OptInstanceList = None, stage: str = 'init',
                    unmap_outputs: bool = True) -> tuple:
        """Class and box targets of one stage, per level.

        Args:
            proposals_list (list[list[Tensor]]): Per image and level, the grid points
                (n_l, 4) (x, y, stride_w, stride_h) for the init stage, or the init boxes (n_l, 4)
                (x1, y1, x2, y2) for the refine stage.
            valid_flag_list (list[list[Tensor]]): Per image and level, whether each proposal is inside
                the image, shape (n_l, ).
            batch_gt_instances (list[InstanceData]): Ground truth of each image, with ``bboxes`` and
                ``labels``.
            batch_img_metas (list[dict]): Meta information of each image.
            batch_gt_instances_ignore (list[InstanceData], optional): Boxes to ignore, per image.
                Defaults to None.
            stage (str): 'init' (``PointAssignerV2``) or 'refine' (``ATSSAssigner``). Defaults to
                'init'.
            unmap_outputs (bool): Whether to put the targets back at every proposal, not only the
                valid ones. Defaults to True.

        Returns:
            tuple: Per level, labels (N, n_l), label weights (N, n_l), box targets (N, n_l, 4) and
            box weights (N, n_l, 4); then the average factor (int: positives, at least 1 per image).

        Raises:
            ValueError: If ``stage`` is neither 'init' nor 'refine', or an image has no valid
                proposal.
        """
        if stage not in ('init', 'refine'):
            raise ValueError(f"stage must be 'init' or 'refine', got {stage!r}")
        num_imgs = len(batch_img_metas)
        num_level_proposals = [proposals.size(0) for proposals in proposals_list[0]]
        if batch_gt_instances_ignore is None:
            batch_gt_instances_ignore = [None] * num_imgs
        (all_labels, all_label_weights, all_bbox_gt, all_bbox_weights, sampling_results) = multi_apply(
            self._get_targets_single, [torch.cat(proposals) for proposals in proposals_list],
            [torch.cat(flags) for flags in valid_flag_list], [num_level_proposals] * num_imgs, batch_gt_instances,
            batch_gt_instances_ignore, stage=stage, unmap_outputs=unmap_outputs)
        avg_factor = sum(result.avg_factor for result in sampling_results)
        return (images_to_levels(all_labels, num_level_proposals),
                images_to_levels(all_label_weights, num_level_proposals),
                images_to_levels(all_bbox_gt, num_level_proposals),
                images_to_levels(all_bbox_weights, num_level_proposals), avg_factor)

    def get_corner_targets(self, points_list: List[List[Tensor]], valid_flag_list: List[List[Tensor]],
                           batch_gt_instances: InstanceList) -> tuple:
        """Corner heat maps, offsets and their weights per level, from ``CornerHeatmapAssigner``.

        The heat maps count on every valid point, the offsets on the positives only.

        Args:
            points_list (list[list[Tensor]]): Per image and level, the grid points
                (n_l, 4) (x, y, stride_w, stride_h).
            valid_flag_list (list[list[Tensor]]): Per image and level, whether each point is inside
                the image, shape (n_l, ).
            batch_gt_instances (list[InstanceData]): Ground truth of each image, with ``bboxes``.

        Returns:
            tuple: Per level, heat maps (N, n_l, 2), offsets (N, n_l, 4), heat-map weights
            (N, n_l, 2) and offset weights (N, n_l, 4); then the average factors of the top-left
            and the bottom-right corner (int: positives, at least 1 per image).
        """
        num_level_points = [points.size(0) for points in points_list[0]]
        heatmaps, offsets, heatmap_weights, offset_weights = [], [], [], []
        avg_factor_tl = avg_factor_br = 0
        for points, flags, gt_instances in zip(points_list, valid_flag_list, batch_gt_instances):
            points, flags = torch.cat(points), torch.cat(flags)
            targets = self.corner_assigner.assign(points[flags], gt_instances.bboxes)
            total = points.size(0)
            heatmaps.append(unmap(targets.heatmap, total, flags))
            offsets.append(unmap(targets.offset, total, flags))
            heatmap_weights.append(unmap(torch.ones_like(targets.heatmap), total, flags))
            offset_weights.append(unmap(targets.positive.repeat_interleave(2, dim=1).float(), total, flags))
            avg_factor_tl += max(int(targets.positive[:, 0].sum()), 1)
            avg_factor_br += max(int(targets.positive[:, 1].sum()), 1)
        return (images_to_levels(heatmaps, num_level_points), images_to_levels(offsets, num_level_points),
                images_to_levels(heatmap_weights, num_level_points),
                images_to_levels(offset_weights, num_level_points), avg_factor_tl, avg_factor_br)

    # ------------------------------------------------------------------ losses
    def loss_by_feat_single(self, cls_score: Tensor, pts_pred_init: Tensor, pts_pred_refine: Tensor,
                            corner_score: Tensor, corner_offset: Tensor, labels: Tensor, label_weights: Tensor,
                            bbox_gt_init: Tensor, bbox_weights_init: Tensor, bbox_gt_refine: Tensor,
                            bbox_weights_refine: Tensor, heatmap_gt: Tensor, offset_gt: Tensor,
                            heatmap_weights: Tensor, offset_weights: Tensor, stride: int, avg_factor_init: int,
                            avg_factor_refine: int, avg_factor_tl: int, avg_factor_br: int) -> Tuple[Tensor, ...]:
        """The losses of one level: class, init and refined boxes (mmdet's), and the corners'.

        Args:
            cls_score (Tensor): Class logits, shape (N, num_classes, H, W).
            pts_pred_init (Tensor): Init points, (x, y) in pixels, shape
                (N, H * W, 2 * num_points).
            pts_pred_refine (Tensor): Refined points, (x, y) in pixels, shape
                (N, H * W, 2 * num_points).
            corner_score (Tensor): Corner heat-map logits, shape (N, 2, H, W).
            corner_offset (Tensor): Corner offsets, shape (N, 4, H, W).
            labels (Tensor): Class targets, shape (N, H * W).
            label_weights (Tensor): Their weights, shape (N, H * W).
            bbox_gt_init (Tensor): Box targets of the init stage, shape (N, H * W, 4).
            bbox_weights_init (Tensor): Their weights, shape (N, H * W, 4).
            bbox_gt_refine (Tensor): Box targets of the refine stage, shape (N, H * W, 4).
            bbox_weights_refine (Tensor): Their weights, shape (N, H * W, 4).
            heatmap_gt (Tensor): Corner heat-map targets, shape (N, H * W, 2).
            offset_gt (Tensor): Corner offset targets, shape (N, H * W, 4).
            heatmap_weights (Tensor): Their weights, shape (N, H * W, 2).
            offset_weights (Tensor): Their weights, shape (N, H * W, 4).
            stride (int): The level's stride.
            avg_factor_init (int): Average factor of the init boxes' loss.
            avg_factor_refine (int): Average factor of the class and refined boxes' losses.
            avg_factor_tl (int): Average factor of the top-left corner's losses.
            avg_factor_br (int): Average factor of the bottom-right corner's losses.

        Returns:
            tuple[Tensor, ...]: The class, init box, refined box, corner heat-map and corner offset
            losses; the corner losses are the mean of the two corners'.
        """
        loss_cls, loss_pts_init, loss_pts_refine = super().loss_by_feat_single(
            cls_score, pts_pred_init, pts_pred_refine, labels, label_weights, bbox_gt_init, bbox_weights_init,
            bbox_gt_refine, bbox_weights_refine, stride, avg_factor_init, avg_factor_refine)
        heatmap_prob = corner_score.permute(0, 2, 3, 1).reshape(-1, 2).sigmoid()
        corner_offset = corner_offset.permute(0, 2, 3, 1).reshape(-1, 4)
        heatmap_gt, heatmap_weights = heatmap_gt.reshape(-1, 2), heatmap_weights.reshape(-1, 2)
        offset_gt, offset_weights = offset_gt.reshape(-1, 4), offset_weights.reshape(-1, 4)
        loss_heatmap = loss_offset = 0
        for corner, avg_factor in enumerate((avg_factor_tl, avg_factor_br)):
            loss_heatmap = loss_heatmap + self.loss_heatmap(
                heatmap_prob[:, corner], heatmap_gt[:, corner], weight=heatmap_weights[:, corner],
                avg_factor=avg_factor)
            columns = slice(2 * corner, 2 * corner + 2)
            loss_offset = loss_offset + self.loss_offset(
                corner_offset[:, columns], offset_gt[:, columns], offset_weights[:, columns], avg_factor=avg_factor)
        return loss_cls, loss_pts_init, loss_pts_refine, loss_heatmap / 2, loss_offset / 2

    def loss_foreground(self, fg_scores: List[Tensor], batch_gt_instances: InstanceList,
                        map_size: Sequence[int]) -> Tensor:
        """The foreground loss over all levels.

        The targets are drawn once at the first level's ``map_size`` and stride, and resized
        (nearest) to the other levels.

        Args:
            fg_scores (list[Tensor]): Foreground logits per level, each shape
                (N, num_classes, H, W).
            batch_gt_instances (list[InstanceData]): Ground truth of each image, with ``bboxes`` and
                ``labels``.
            map_size (Sequence[int]): The first level's (H, W).

        Returns:
            Tensor: The loss, a scalar.
        """
        targets, weights = zip(*[
            foreground_targets(gt.bboxes, gt.labels, self.num_classes, map_size, self.point_strides[0])
            for gt in batch_gt_instances
        ])
        targets, weights = torch.stack(targets), torch.stack(weights)
        preds, level_targets, level_weights = [], [], []
        for fg_score in fg_scores:
            preds.append(fg_score.reshape(-1))
            level_targets.append(F.interpolate(targets, fg_score.shape[-2:], mode='nearest').reshape(-1))
            level_weights.append(F.interpolate(weights, fg_score.shape[-2:], mode='nearest').reshape(-1))
        level_targets = torch.cat(level_targets)
        return self.loss_sem(torch.cat(preds), level_targets, torch.cat(level_weights),
                             avg_factor=float(level_targets.gt(0).sum()))

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     pts_preds_init: List[Tensor],
                     pts_preds_refine: List[Tensor],
                     corner_scores: List[Tensor],
                     corner_offsets: List[Tensor],
                     fg_scores: List[Tensor],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        """The losses of the head's outputs (``forward``) against the ground truth.

        Args:
            cls_scores (list[Tensor]): Class logits per level, each shape (N, num_classes, H, W).
            pts_preds_init (list[Tensor]): Init points per level, each shape
                (N, 2 * num_points, H, W).
            pts_preds_refine (list[Tensor]): Refined points per level, each shape
                (N, 2 * num_points, H, W).
            corner_scores (list[Tensor]): Corner heat-map logits per level, each shape (N, 2, H, W).
            corner_offsets (list[Tensor]): Corner offsets per level, each shape (N, 4, H, W).
            fg_scores (list[Tensor]): Foreground logits per level, each shape
                (N, num_classes, H, W).
            batch_gt_instances (list[InstanceData]): Ground truth of each image, with ``bboxes`` and
                ``labels``.
            batch_img_metas (list[dict]): Meta information of each image.
            batch_gt_instances_ignore (list[InstanceData], optional): Boxes to ignore, per image.
                Defaults to None.

        Returns:
            dict[str, Tensor]: ``loss_cls``, ``loss_pts_init``, ``loss_pts_refine``,
            ``loss_corner_heatmap`` and ``loss_corner_offset`` (one per level each) and
            ``loss_foreground``.
        """
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        device = cls_scores[0].device

        # init stage: grid points assigned by PointAssignerV2
        center_list, valid_flag_list = self.get_points(featmap_sizes, batch_img_metas, device)
        pts_coordinate_preds_init = self.offset_to_pts(center_list, pts_preds_init)
        (_, _, bbox_gt_list_init, bbox_weights_list_init, avg_factor_init) = self.get_targets(
            center_list, valid_flag_list, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore,
            stage='init')

        # corners: targets on the grid points
        (heatmap_gt_list, offset_gt_list, heatmap_weight_list, offset_weight_list, avg_factor_tl,
         avg_factor_br) = self.get_corner_targets(center_list, valid_flag_list, batch_gt_instances)

        # refine stage and classes: the init boxes (no gradient) assigned by ATSS
        pts_coordinate_preds_refine = self.offset_to_pts(center_list, pts_preds_refine)
        bbox_list = []
        for i_img, centers in enumerate(center_list):
            boxes = []
            for i_lvl, pts_pred_init in enumerate(pts_preds_init):
                bbox_shift = self.points2bbox(pts_pred_init[i_img:i_img + 1].detach()) * self.point_strides[i_lvl]
                boxes.append(centers[i_lvl][:, :2].repeat(1, 2) + bbox_shift[0].permute(1, 2, 0).reshape(-1, 4))
            bbox_list.append(boxes)
        (labels_list, label_weights_list, bbox_gt_list_refine, bbox_weights_list_refine,
         avg_factor_refine) = self.get_targets(bbox_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                                               batch_gt_instances_ignore, stage='refine')

        losses_cls, losses_pts_init, losses_pts_refine, losses_heatmap, losses_offset = multi_apply(
            self.loss_by_feat_single, cls_scores, pts_coordinate_preds_init, pts_coordinate_preds_refine,
            corner_scores, corner_offsets, labels_list, label_weights_list, bbox_gt_list_init,
            bbox_weights_list_init, bbox_gt_list_refine, bbox_weights_list_refine, heatmap_gt_list, offset_gt_list,
            heatmap_weight_list, offset_weight_list, self.point_strides, avg_factor_init=avg_factor_init,
            avg_factor_refine=avg_factor_refine, avg_factor_tl=avg_factor_tl, avg_factor_br=avg_factor_br)
        return dict(
            loss_cls=losses_cls,
            loss_pts_init=losses_pts_init,
            loss_pts_refine=losses_pts_refine,
            loss_corner_heatmap=losses_heatmap,
            loss_corner_offset=losses_offset,
            loss_foreground=self.loss_foreground(fg_scores, batch_gt_instances, featmap_sizes[0]))

    # ------------------------------------------------------------------ inference
    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        pts_preds_init: List[Tensor],
                        pts_preds_refine: List[Tensor],
                        corner_scores: List[Tensor],
                        corner_offsets: List[Tensor],
                        fg_scores: List[Tensor],
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> InstanceList:
        """Detections from the head's outputs.

        Boxes come from the refined points, their corners snapped to the corner maps of
        ``corner_source_levels``, then mmdet's post-processing (score filter, NMS, ``max_per_img``).

        Args:
            cls_scores (list[Tensor]): Class logits per level, each shape (N, num_classes, H, W).
            pts_preds_init (list[Tensor]): Init points per level (unused: boxes come from the refined
                points).
            pts_preds_refine (list[Tensor]): Refined points per level, each shape
                (N, 2 * num_points, H, W).
            corner_scores (list[Tensor]): Corner heat-map logits per level, each shape (N, 2, H, W).
            corner_offsets (list[Tensor]): Corner offsets per level, each shape (N, 4, H, W).
            fg_scores (list[Tensor]): Foreground logits per level (unused at test time).
            batch_img_metas (list[dict], optional): Meta information of each image. Defaults to None.
            cfg (ConfigDict, optional): Test config; None uses ``test_cfg``. Defaults to None.
            rescale (bool): Whether to scale the boxes back to the original image. Defaults to False.
            with_nms (bool): Whether to apply NMS. Defaults to True.

        Returns:
            list[InstanceData]: One per image, with ``bboxes`` (n, 4), ``scores`` (n, ) and
            ``labels`` (n, ).
        """
        cfg = self.test_cfg if cfg is None else cfg
        featmap_sizes = [score.shape[-2:] for score in cls_scores]
        mlvl_priors = self.prior_generator.grid_priors(featmap_sizes, dtype=cls_scores[0].dtype,
                                                       device=cls_scores[0].device)
        bbox_preds = [self.points2bbox(pts) for pts in pts_preds_refine]
        results = []
        for img_id, img_meta in enumerate(batch_img_metas):
            results.append(self._predict_by_feat_single(
                [score[img_id].detach() for score in cls_scores], [bbox[img_id].detach() for bbox in bbox_preds],
                [score[img_id].detach() for score in corner_scores],
                [offset[img_id].detach() for offset in corner_offsets], mlvl_priors, img_meta, cfg, rescale,
                with_nms))
        return results

    def _predict_by_feat_single(self, cls_score_list: List[Tensor], bbox_pred_list: List[Tensor],
                                corner_score_list: List[Tensor], corner_offset_list: List[Tensor],
                                mlvl_priors: List[Tensor], img_meta: dict, cfg: ConfigDict, rescale: bool = False,
                                with_nms: bool = True) -> InstanceData:
        """One image: per level, the best (box, class) pairs, boxes decoded from the grid point
        and snapped to the corner maps of ``corner_source_levels``; then mmdet's post-process."""
        img_shape = img_meta['img_shape']
        mlvl_bboxes, mlvl_scores, mlvl_labels = [], [], []
        for level, (cls_score, bbox_pred, priors) in enumerate(zip(cls_score_list, bbox_pred_list, mlvl_priors)):
            scores = cls_score.permute(1, 2, 0).reshape(-1, self.cls_out_channels).sigmoid()
            bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
            scores, labels, _, kept = filter_scores_and_topk(scores, cfg.score_thr, cfg.get('nms_pre', -1),
                                                              dict(bbox_pred=bbox_pred, priors=priors))
            bboxes = self._bbox_decode(kept['priors'], kept['bbox_pred'], self.point_strides[level], img_shape)
            source = self.corner_source_levels[level]
            if source >= 0 and min(corner_score_list[source].shape[-2:]) >= 2:
                bboxes = self._snap_box_corners(bboxes, corner_score_list[source], corner_offset_list[source],
                                                self.point_strides[source], img_shape)
            mlvl_bboxes.append(bboxes)
            mlvl_scores.append(scores)
            mlvl_labels.append(labels)
        results = InstanceData(bboxes=torch.cat(mlvl_bboxes), scores=torch.cat(mlvl_scores),
                               labels=torch.cat(mlvl_labels))
        return self._bbox_post_process(results=results, cfg=cfg, rescale=rescale, with_nms=with_nms,
                                       img_meta=img_meta)

    @staticmethod
    def _snap_box_corners(bboxes: Tensor, corner_score: Tensor, corner_offset: Tensor, stride: int,
                          img_shape: Sequence[int]) -> Tensor:
        """Boxes (n, 4) with both corners moved by :func:`snap_corners` on one level's maps
        (scores (2, H, W), offsets (4, H, W)), clamped to the image."""
        top_left = snap_corners(bboxes[:, :2], corner_score[0], corner_offset[0:2], stride)
        bottom_right = snap_corners(bboxes[:, 2:], corner_score[1], corner_offset[2:4], stride)
        height, width = img_shape[:2]
        snapped = torch.cat([top_left, bottom_right], dim=1)
        limits = snapped.new_tensor([width, height, width, height])
        return torch.minimum(snapped.clamp(min=0), limits)
