# Focal-T on ImageNet-1K, the authors' recipe (microsoft/Focal-Transformer, config.py and
# configs/focal_tiny_patch4_window7_224.yaml): 300 epochs at a total batch of 1024 (8 GPUs x 128).
# The data, schedule and runtime are mmpretrain's Swin ones, which follow the same timm recipe;
# what the authors' recipe changes from them is stated here. docs/imagenet.md lists every setting
# beside the authors' value and where mmpretrain's transform differs from timm's.
# The other configs of this folder are this one with their differences.
_base_ = [
    'mmpretrain::_base_/models/swin_transformer/tiny_224.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

# mmpretrain's ImageClassifier: the backbone's last stage (its output norm `norm3` is the official
# model's final `norm`), GlobalAveragePooling, LinearClsHead with label smoothing 0.1; Mixup 0.8 or
# CutMix 1.0, one of the two, each with probability 0.5, on every batch (timm's switch_prob 0.5).
# The backbone is the official 224x224 model's: its stage 4, a single 7x7 window there, has no
# rolled keys (expand size 0) and no table for them; the published checkpoints load as they are.
model = dict(
    backbone=dict(
        _delete_=True,
        type='FocalTransformer',
        arch='tiny',
        drop_path_rate=0.2,
        expand_sizes=(3, 3, 3, 0),
        out_indices=(3, )),
    head=dict(in_channels=768))

# 128 pictures per GPU on 8 GPUs; the authors drop the last incomplete batch.
train_dataloader = dict(batch_size=128, drop_last=True)

# AdamW, lr 5e-4 per 512 pictures (1e-3 at 1024; --auto-scale-lr scales it to the batch run),
# weight decay 0.05 but none on 1-D parameters (norms, biases) and relative-position tables
# (the base's paramwise_cfg); gradient norm clipped at 5.
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
# 20 warm-up epochs from 5e-7 per 512 pictures, then cosine to 5e-6 per 512: the authors scale
# all three rates with the batch, so they are ratios of the base lr here. Both step every
# iteration, as timm's scheduler does (the base's cosine steps once an epoch).
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / 5e-4, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=5e-6 / 5e-4, by_epoch=True, begin=20,
         convert_to_iter_based=True),
]

# Checkpoints every epoch (a resumed run continues exactly), the last three and the best kept.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3, save_best='auto'))
