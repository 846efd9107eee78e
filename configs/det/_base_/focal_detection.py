# What every Focal Transformer detector shares. A detector config lists this file beside
# mmdet's own config in `_base_` and picks pieces by name (`_base_.focal_tiny`, ...): the
# names here are new keys, so they never clash with the mmdet config they sit beside.

# Backbones (paper: drop path T 0.2, S 0.3, B 0.3; ImageNet-1K checkpoints loaded as
# published). The tiny dict is complete; the others are the changes from it, so that a
# size variant of a detector merges them into its tiny config.
focal_checkpoint_url = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focal-{}-is224-ws7.pth'  # noqa: E501
focal_tiny = dict(
    type='FocalTransformer',
    arch='tiny',
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(type='Pretrained', checkpoint=focal_checkpoint_url.format('tiny')))
focal_small = dict(
    arch='small',
    drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=focal_checkpoint_url.format('small')))
focal_base = dict(
    arch='base',
    drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint=focal_checkpoint_url.format('base')))

# No weight decay on normalisation layers and on every relative-position table: the
# in-window `relative_position_bias_table`, `..._to_neighbors` and `..._to_windows.<k>` all
# contain the first key. `norm_decay_mult` also covers norms whose names lack 'norm' (the
# BN of the cascade heads' ConvModules is called `bn`).
focal_no_decay = dict(
    norm_decay_mult=0.,
    custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    })
# Swin's detection optimizer, which the paper follows. `_delete_` drops whatever the mmdet
# config had (SGD with momentum, ConvNeXt's AMP wrapper and layer-wise decay).
focal_adamw = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=focal_no_decay)

# 1000-iteration linear warm-up, then x0.1 steps by epoch: 1x = 12 epochs (8, 11),
# 3x = 36 epochs (27, 33). A 3x config also sets train_cfg.max_epochs=36.
focal_warmup = dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000)
focal_schedule_1x = [
    focal_warmup,
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
focal_schedule_3x = [
    focal_warmup,
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]

# The 3x training augmentation of mmdet's Swin configs (from DETR / Sparse R-CNN): short side
# 480-800 (long side <= 1333), or with equal chance a resize to 400-600, a random crop of
# 384-600 and the 480-800 resize.
ms_scales = [(short, 1333) for short in range(480, 801, 32)]
ms_crop_resize = dict(
    type='RandomChoice',
    transforms=[
        [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
        [
            dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)], keep_ratio=True),
            dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
            dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
        ],
    ])
train_pipeline_3x_detection = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    ms_crop_resize,
    dict(type='PackDetInputs'),
]
train_pipeline_3x_instance = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    ms_crop_resize,
    dict(type='PackDetInputs'),
]

# Focal-L (arch='large': Swin-L's widths, inferred from the published system sizes; the window is
# set per system in its config). No ImageNet-22K weights of Focal-L were ever published; these
# systems start from the checkpoint configs/cls/focal_l_in21k_ft_in1k.py writes last (Focal-L
# pretrained on ImageNet-22K by configs/cls/focal_l_in21k.py, then fine-tuned on ImageNet-1K at
# 384 with window 12: README, "Focal-L's start"), or from another file with
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH` (`model.backbone.init_cfg=None` trains
# from scratch); tools/train.py stops before building anything if the file is missing. Position
# tables of another window are resized (the ImageNet-22K classifier's window 7, say). Activation
# checkpointing on: these systems train at up to 2000x1200 pixels.
focal_large_checkpoint = 'work_dirs/focal_l_in21k_ft_in1k/epoch_30.pth'
focal_large = dict(
    type='FocalTransformer',
    arch='large',
    with_cp=True,
    init_cfg=dict(type='Pretrained', checkpoint=focal_large_checkpoint, resize_position_tables=True))

# What a test-time-augmentation pipeline packs: the flip, so DetTTAModel can undo it.
tta_meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction')
