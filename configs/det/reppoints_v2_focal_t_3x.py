# RepPointsV2, Focal-T, 3x: 36 epochs with multi-scale and random-crop training.
# The detector is the authors' GIoU configuration (Scalsol/RepPointsV2, reppoints_v2_r50_fpn_giou_*:
# GN head and FPN, exact-minmax boxes, PointAssignerV2 / corner heat maps / ATSS targets, focal
# classification, GIoU boxes), ported to mmdet 3 in mmfocal/models/dense_heads/reppoints_v2_head.py
# on mmdet's RepPoints config; the backbone, optimizer, schedule and pipeline are our other 3x
# configs' (Swin's recipe), plus the authors' gradient clipping.
_base_ = [
    'mmdet::reppoints/reppoints-moment_r50_fpn-gn_head-gn_1x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

# Stages 2-4 feed the FPN (P3-P7; P6 from stage 4 itself, 'on_input', as the authors').
model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[192, 384, 768], start_level=0),
    bbox_head=dict(
        type='RepPointsV2Head',
        shared_stacked_convs=1,
        first_kernel_size=3,
        kernel_size=1,
        corner_dim=64,
        loss_bbox_init=dict(_delete_=True, type='GIoULoss', loss_weight=1.0),
        loss_bbox_refine=dict(_delete_=True, type='GIoULoss', loss_weight=2.0),
        loss_heatmap=dict(type='GaussianFocalLoss', alpha=2.0, gamma=4.0, loss_weight=0.25),
        loss_offset=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0),
        loss_sem=dict(type='SeparateFocalLoss', gamma=2.0, alpha=0.25, loss_weight=0.1),
        transform_method='exact_minmax'),
    train_cfg=dict(
        init=dict(assigner=dict(type='PointAssignerV2', scale=4, pos_num=1)),
        heatmap=dict(assigner=dict(type='CornerHeatmapAssigner', gaussian_iou=0.7)),
        refine=dict(assigner=dict(_delete_=True, type='ATSSAssigner', topk=9))),
    test_cfg=dict(nms=dict(iou_threshold=0.6)))

train_pipeline = _base_.train_pipeline_3x_detection
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=36)
optim_wrapper = dict(_base_.focal_adamw, clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = _base_.focal_schedule_3x
