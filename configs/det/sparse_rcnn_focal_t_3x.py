# Sparse R-CNN, Focal-T, 3x: mmdet's 300-proposal, multi-scale/crop 3x setting and Sparse
# R-CNN's own optimizer (AdamW lr 2.5e-5, weight decay 1e-4, gradients clipped at norm 1),
# with the paper's 1000-iteration warm-up and no decay on position tables and norms.
_base_ = [
    'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(paramwise_cfg=_base_.focal_no_decay)
param_scheduler = _base_.focal_schedule_3x
