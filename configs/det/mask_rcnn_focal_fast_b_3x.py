# Mask R-CNN, Focal-fast-B, 3x: the Focal-fast-T config with the base backbone (drop path 0.3, as
# Focal-B; 128 channels at stride 4).
_base_ = './mask_rcnn_focal_fast_t_3x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=_base_.focal_fast_checkpoint_url.format('base'))),
    neck=dict(in_channels=[128, 256, 512, 1024]))
