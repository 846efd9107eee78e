# ATSS, Focal-T, 3x: 36 epochs with multi-scale and random-crop training.
_base_ = [
    'mmdet::atss/atss_r50_fpn_1x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

# Stages 2-4 feed the FPN (P3-P7), as for RetinaNet.
model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

train_pipeline = _base_.train_pipeline_3x_detection
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=36)
optim_wrapper = _base_.focal_adamw
param_scheduler = _base_.focal_schedule_3x
