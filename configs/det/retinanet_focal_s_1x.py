# RetinaNet, Focal-S, 1x: the Focal-T config with the small backbone.
_base_ = './retinanet_focal_t_1x.py'

model = dict(backbone=_base_.focal_small)
