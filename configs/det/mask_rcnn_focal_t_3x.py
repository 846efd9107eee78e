# Mask R-CNN, Focal-T, 3x: 36 epochs with multi-scale and random-crop training.
_base_ = './mask_rcnn_focal_t_1x.py'

train_pipeline = _base_.train_pipeline_3x_instance
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=36)
param_scheduler = _base_.focal_schedule_3x
