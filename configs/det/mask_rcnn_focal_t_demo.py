# Demo: Mask R-CNN with a Focal Transformer backbone trained from scratch on the synthetic shapes
# of tools/make_demo_data.py, small enough to learn on 2 CPU cores in minutes (`make demo`).
#
# It is mask_rcnn_focal_t_1x.py (single scale; the 3x's multi-scale crops are for 800-pixel
# pictures) with the changes a laptop needs:
# - data: data/demo/coco, 4 shape classes, pictures at 128 pixels;
# - a DEMO-SIZED Focal model, not Focal-T: embed_dims 32, depths (1,1,2,1), no ImageNet weights
#   (configs/_base_/focal_demo_backbone.py);
#   the FPN and heads are narrowed to match (64 channels, a 2-conv mask head, fewer sampled RoIs
#   and proposals), with GroupNorm in the FPN and the mask head, which lets a from-scratch model
#   train at a high learning rate;
# - anchors a notch smaller (scale 4), for objects of 15-60 pixels;
# - the schedule: 2 epochs (150 iterations of 8 pictures) of AdamW at 1e-3 with warm-up and
#   cosine decay, about 3 minutes on 2 CPU cores (`make demo` trains it twice: from scratch and
#   from the demo classifier, mask_rcnn_focal_t_demo_pretrained.py); why 2: below, and the
#   learning curves and seeds in docs/demo.md.
_base_ = ['./mask_rcnn_focal_t_1x.py', '../_base_/focal_demo_backbone.py', '../_base_/focal_demo_coco.py']

data_root = _base_.demo_data_root
classes = _base_.demo_classes
img_scale = _base_.demo_img_scale
num_classes = len(classes)

norm_cfg = _base_.demo_norm_cfg
demo_channels = 64
model = dict(
    backbone=_base_.focal_demo_backbone,
    neck=dict(in_channels=_base_.focal_demo_channels, out_channels=demo_channels, norm_cfg=norm_cfg),
    rpn_head=dict(
        in_channels=demo_channels,
        feat_channels=demo_channels,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=demo_channels, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=demo_channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(
            out_channels=demo_channels, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(
            num_convs=2,
            in_channels=demo_channels,
            conv_out_channels=demo_channels,
            norm_cfg=norm_cfg,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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

# 2 epochs of 75 iterations, validated after each (learning curves in docs/demo.md): 50 warm-up
# iterations, then the base's cosine decay, ending at epoch 2. Short on purpose: pretraining pays
# most when detection time is short (docs/demo.md).
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(_base_.demo_param_scheduler[0], end=50),
                   dict(_base_.demo_param_scheduler[1], end=max_epochs)]
default_hooks = _base_.demo_default_hooks
auto_scale_lr = dict(base_batch_size=8)
# The same draws every run (the demo's numbers repeat); --cfg-options randomness.seed=N for others.
randomness = dict(seed=0)
