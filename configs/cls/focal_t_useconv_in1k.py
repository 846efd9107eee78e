# Focal-T with the overlapping convolutional stem and downsamples (the "-useconv" checkpoints).
_base_ = './focal_t_in1k.py'

model = dict(backbone=dict(use_conv_embed=True))
