# Demo: UperNet with a Focal Transformer backbone trained from scratch on the synthetic ADE20K-
# format shapes of tools/make_demo_data.py, small enough to learn on 2 CPU cores in minutes
# (`make demo`).
#
# It is upernet_focal_t_512x512_160k_ade20k.py with the changes a laptop needs:
# - data: data/demo/ade, ADE20K's layout and reduce_zero_label convention, 5 classes
#   (background and 4 shapes), 128-pixel pictures and crops;
# - a DEMO-SIZED Focal model, not Focal-T: embed_dims 32, depths (1,1,2,1), no ImageNet weights
#   (configs/_base_/focal_demo_backbone.py); UperNet's and the auxiliary head's widths
#   are cut to match (64 and 32 channels instead of 512 and 256), with plain BN (one process);
# - the schedule: 400 iterations of 8 crops, AdamW at 1e-3 with warm-up and poly decay: about
#   4 minutes on 2 CPU cores (600 iterations, 6 minutes, reached mIoU 61-63; learning curves in
#   docs/demo.md).
_base_ = ['./upernet_focal_t_512x512_160k_ade20k.py', '../_base_/focal_demo_backbone.py']

data_root = 'data/demo/ade'
classes = ('background', 'circle', 'square', 'triangle', 'cross')
metainfo = dict(classes=classes,
                palette=[[120, 120, 120], [220, 20, 60], [0, 130, 200], [60, 180, 75],
                         [255, 160, 0]])
num_classes = len(classes)
img_scale = (128, 128)
crop_size = (128, 128)
backbone_channels = _base_.focal_demo_channels

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=_base_.focal_demo_backbone,
    decode_head=dict(in_channels=backbone_channels, channels=64, num_classes=num_classes,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=backbone_channels[2], channels=32,
                        num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
tta_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                  keep_ratio=True) for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
# The files follow ADE20K's layout and conventions, but ADE20KDataset pins its 150 class names
# (any other class list is mapped onto them by name), so the demo's own classes go through
# BaseSegDataset with ADE20KDataset's settings spelled out.
ade20k_format = dict(type='BaseSegDataset', img_suffix='.jpg', seg_map_suffix='.png',
                     reduce_zero_label=True, data_root=data_root, metainfo=metainfo)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**ade20k_format, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(**ade20k_format, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=100)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=50, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=2),
    # With --show-dir, draw every 10th validation picture.
    visualization=dict(interval=10))
auto_scale_lr = dict(base_batch_size=8)
# The same draws every run (the demo's numbers repeat); --cfg-options randomness.seed=N for others.
randomness = dict(seed=0)
