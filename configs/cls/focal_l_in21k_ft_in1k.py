# Focal-L fine-tuned on ImageNet-1K at 384x384, window 12, from its ImageNet-22K classifier
# (focal_l_in21k.py): Swin-L's 22K -> 1K recipe (microsoft/Swin-Transformer,
# configs/swin/swin_large_patch4_window12_384_22kto1k_finetune.yaml on its config.py defaults), which
# is the authors' ImageNet-1K recipe (focal_t_in1k.py) with what this file states: 384 pictures,
# window 12, 30 epochs with 5 of warm-up, lr 4e-5, weight decay 1e-8, drop path 0.2. The window
# of the paper's COCO systems (configs/det/*focal_l*), which start from this file's last checkpoint.
_base_ = './focal_t_in1k.py'

# The ImageNet-22K classifier's backbone, its final norm included; its 21,841-class head is not
# used and this model's 1000-class head starts anew (mmpretrain's LinearClsHead initialisation).
# Window 7 -> 12: the relative-position tables and pooling weights are resized (bicubic).
pretrained = 'work_dirs/focal_l_in21k/epoch_90.pth'
crop_size = 384
model = dict(
    backbone=dict(
        arch='large',
        window_size=12,  # at 384 stage 4 is a single 12x12 window: expand sizes (3, 3, 3, 0) as at 224
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, resize_position_tables=True)),
    head=dict(in_channels=1536))

# Training crops of 384; test: the whole picture resized to 384x384, no centre crop (Swin's
# TEST.CROP False at 384, as mmpretrain's imagenet_bs64_swin_384.py).
train_pipeline = [
    dict(step, scale=crop_size) if step['type'] == 'RandomResizedCrop' else step for step in _base_.train_pipeline
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
# A batch of 1024: 8 GPUs x 32 pictures x 4 accumulated steps (Swin-B's published command: 64 x 2;
# Focal-L at 384 needs about 1 GiB of activations per picture, docs/imagenet.md). mmengine's
# auto_scale_lr counts GPUs x batch per step: 256 here.
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(accumulative_counts=4, optimizer=dict(lr=2e-5 * 1024 / 512, weight_decay=1e-8))
auto_scale_lr = dict(base_batch_size=256)

# 30 epochs: 5 of warm-up from 2e-8 per 512 pictures, then cosine to 2e-7 per 512 (the base's
# ratios of the peak, 1e-3 and 1e-2, are Swin's here too).
max_epochs = 30
warmup_epochs = 5
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs),
]
