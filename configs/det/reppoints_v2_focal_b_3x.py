# RepPointsV2, Focal-B, 3x: the Focal-T config with the base backbone and the FPN's input widths.
_base_ = './reppoints_v2_focal_t_3x.py'

model = dict(backbone=_base_.focal_base, neck=dict(in_channels=[256, 512, 1024]))
