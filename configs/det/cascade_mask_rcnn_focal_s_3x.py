# Cascade Mask R-CNN, Focal-S, 3x: the Focal-T config with the small backbone.
_base_ = './cascade_mask_rcnn_focal_t_3x.py'

model = dict(backbone=_base_.focal_small)
