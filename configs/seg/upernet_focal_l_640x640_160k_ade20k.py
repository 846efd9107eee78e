# UperNet, Focal-L, ADE20K, 640x640 crops, 160k iterations: the paper's 54.0 mIoU (55.4 with the
# multi-scale test) system. The authors never released it. It is the Focal-T recipe (Swin's AdamW
# recipe, which Swin's paper uses for Swin-L as well: lr 6e-5, weight decay 0.01, 1500-iteration
# warm-up, poly decay, batch 16) with Focal-L and the data of mmseg's
# `_base_/datasets/ade20k_640x640.py`: random resize of (2560, 640) by 0.5-2.0, 640x640 crops, test
# at (2560, 640). These are the only lines that differ from that file's dataset and ours.
_base_ = ['./upernet_focal_t_512x512_160k_ade20k.py']

# No ImageNet-22K weights of Focal-L were ever published: this starts, as the COCO systems, from the
# checkpoint configs/cls/focal_l_in21k_ft_in1k.py writes last (README, "Focal-L's start"); its
# window-12 position tables are resized to this model's window 7 (the ImageNet-22K classifier of
# configs/cls/focal_l_in21k.py, work_dirs/focal_l_in21k/epoch_90.pth, has window 7 and loads as it
# is). Another file: `--cfg-options model.backbone.init_cfg.checkpoint=PATH`
# (`model.backbone.init_cfg=None` trains from scratch); tools/train.py stops before building
# anything if the file is missing.
checkpoint_file = 'work_dirs/focal_l_in21k_ft_in1k/epoch_30.pth'
backbone_channels = [192, 384, 768, 1536]

crop_size = (640, 640)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='large',
        # Window 7, the 224 setting of Focal-T/S/B: the published 240M fits Focal-L with window 7
        # (237.45M, -1.1%), not with window 12 (254.54M, +6.1%), the window of the COCO systems.
        # No single window fits both systems with mmdet's and mmseg's heads: docs/det_results.md.
        window_size=7,
        # Activation checkpointing: the 640x640 crops of a 200M backbone do not fit otherwise
        # (docs/seg_results.md).
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file, resize_position_tables=True)),
    decode_head=dict(in_channels=backbone_channels),
    auxiliary_head=dict(in_channels=backbone_channels[2]))

test_scale = (2560, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=test_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Multi-scale flip test (`--tta`): the Focal-T ratios and flips, of the 640 test scale.
tta_pipeline = [
    _base_.tta_pipeline[0],
    dict(
        _base_.tta_pipeline[1],
        transforms=[
            [dict(type='Resize', scale=(int(test_scale[0] * r), int(test_scale[1] * r)), keep_ratio=True)
             for r in _base_.img_ratios],
            *_base_.tta_pipeline[1]['transforms'][1:],
        ]),
]
