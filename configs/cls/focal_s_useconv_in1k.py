# Focal-S with the overlapping convolutional stem and downsamples (the "-useconv" checkpoints).
_base_ = './focal_s_in1k.py'

model = dict(backbone=dict(use_conv_embed=True))
