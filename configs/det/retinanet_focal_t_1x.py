# RetinaNet, Focal-T, 1x: 12 epochs, single scale 1333x800. AdamW as Swin's authors trained
# their RetinaNet (mmdet's own Swin RetinaNet keeps SGD).
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    './_base_/focal_detection.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

# Stages 2-4 feed the FPN (P3-P7), as in mmdet's Swin RetinaNet: a stride-4 output would go
# unread and leave its norm without gradients, which distributed training rejects.
model = dict(
    backbone=dict(_base_.focal_tiny, _delete_=True, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

optim_wrapper = _base_.focal_adamw
param_scheduler = _base_.focal_schedule_1x
