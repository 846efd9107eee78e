# Focal-B with the overlapping convolutional stem and downsamples (the "-useconv" checkpoints).
_base_ = './focal_b_in1k.py'

model = dict(backbone=dict(use_conv_embed=True))
