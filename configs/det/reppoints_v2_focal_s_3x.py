# RepPointsV2, Focal-S, 3x: the Focal-T config with the small backbone.
_base_ = './reppoints_v2_focal_t_3x.py'

model = dict(backbone=_base_.focal_small)
