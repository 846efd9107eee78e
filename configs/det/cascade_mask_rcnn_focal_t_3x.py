# Cascade Mask R-CNN, Focal-T, 3x. mmdet's ConvNeXt cascade config has the heads Swin's
# detection code used (three 4-conv-1-fc box heads with BN and GIoU loss) and the 3x
# multi-scale/crop schedule; from it we change the backbone and the optimizer (no AMP, no
# layer-wise decay: Swin's AdamW recipe).
_base_ = [
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = _base_.focal_adamw
param_scheduler = _base_.focal_schedule_3x
