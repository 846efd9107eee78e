# Demo: RepPointsV2 with a Focal Transformer backbone trained from scratch on the synthetic shapes
# of tools/make_demo_data.py (boxes only), small enough to learn on 2 CPU cores in minutes.
#
# It is reppoints_v2_focal_t_3x.py with the changes mask_rcnn_focal_t_demo.py makes for a laptop:
# - data: data/demo/coco, 4 shape classes, pictures at 128 pixels, single scale;
# - the DEMO-SIZED Focal model (configs/_base_/focal_demo_backbone.py), no ImageNet weights;
#   the FPN and head narrowed to 64 channels (GroupNorm of 16 groups, 2 convs per tower);
# - the schedule: 12 epochs (900 iterations of 8 pictures) of AdamW at 1e-3 with warm-up and
#   cosine decay, validated every epoch (learning curve in docs/demo.md).
_base_ = ['./reppoints_v2_focal_t_3x.py', '../_base_/focal_demo_backbone.py', '../_base_/focal_demo_coco.py']

data_root = _base_.demo_data_root
classes = _base_.demo_classes
img_scale = _base_.demo_img_scale

norm_cfg = _base_.demo_norm_cfg
demo_channels = 64
model = dict(
    backbone=_base_.focal_demo_backbone,
    neck=dict(in_channels=_base_.focal_demo_channels[1:], out_channels=demo_channels, norm_cfg=norm_cfg),
    bbox_head=dict(
        num_classes=len(classes),
        in_channels=demo_channels,
        feat_channels=demo_channels,
        point_feat_channels=demo_channels,
        stacked_convs=2,
        corner_dim=32,
        norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, dataset=dict(_base_.demo_train_dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=1, dataset=dict(_base_.demo_val_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = _base_.demo_evaluator
test_evaluator = val_evaluator


train_cfg = dict(max_epochs=_base_.demo_max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = _base_.demo_param_scheduler
default_hooks = _base_.demo_default_hooks
auto_scale_lr = dict(base_batch_size=8)
