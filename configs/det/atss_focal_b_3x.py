# ATSS, Focal-B, 3x: the Focal-T config with the base backbone (128 channels at stride 4).
_base_ = './atss_focal_t_3x.py'

model = dict(backbone=_base_.focal_base, neck=dict(in_channels=[256, 512, 1024]))
