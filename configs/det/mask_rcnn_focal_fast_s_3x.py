# Mask R-CNN, Focal-fast-S, 3x: the Focal-fast-T config with the small backbone (drop path 0.3, as Focal-S).
_base_ = './mask_rcnn_focal_fast_t_3x.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=_base_.focal_fast_checkpoint_url.format('small'))))
