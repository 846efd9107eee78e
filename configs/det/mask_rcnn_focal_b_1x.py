# Mask R-CNN, Focal-B, 1x: the Focal-T config with the base backbone (128 channels at stride 4).
_base_ = './mask_rcnn_focal_t_1x.py'

model = dict(backbone=_base_.focal_base, neck=dict(in_channels=[128, 256, 512, 1024]))
