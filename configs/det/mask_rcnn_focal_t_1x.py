# Mask R-CNN, Focal-T, 1x: 12 epochs, single scale 1333x800 (mmdet's R50 1x data and model,
# with the Focal backbone and Swin's AdamW recipe).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = _base_.focal_adamw
param_scheduler = _base_.focal_schedule_1x
