# Focal-L pretrained on ImageNet-22K (mmpretrain's `ImageNet21k`: the fall 2011 release, 21,841
# classes with pictures, about 14.2M pictures) at 224x224, window 7: Swin-L's ImageNet-22K recipe
# (microsoft/Swin-Transformer, configs/swin/swin_large_patch4_window7_224_22k.yaml on its config.py
# defaults), which is the authors' ImageNet-1K recipe (focal_t_in1k.py: the same timm augmentation,
# AdamW, no-decay rules, clipping and label smoothing) with what this file states: the model, the
# data, 90 epochs with 5 of warm-up, a batch of 4096, drop path 0.2. No validation: the release has
# no validation split (Swin held out its own; mmpretrain's ImageNet21k reads only 'train').
# focal_l_in21k_ft_in1k.py fine-tunes the result on ImageNet-1K at 384x384. How the paper's own
# Focal-L was made could not be checked here: docs/imagenet.md, "Focal-L".
_base_ = './focal_t_in1k.py'

num_classes = 21841  # mmpretrain's imagenet21k_bs128.py says 21842; the head must match your copy's classes
# Focal-L (Swin-L's widths, the detection and segmentation configs' arch='large'), window 7 and the
# classifier's expand sizes (3, 3, 3, 0) as focal_t_in1k.py: at 224 stage 4 is a single 7x7 window.
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.2),
    head=dict(num_classes=num_classes, in_channels=1536))
data_preprocessor = dict(num_classes=num_classes)  # Mixup / CutMix mix one-hot labels of this length

# data/imagenet21k/train/<wnid>/*.JPEG and meta/train.txt ("<wnid>/<file> <label>" lines; without it
# the dataset scans 21k folders at every start), as mmpretrain's ImageNet21k reads them.
imagenet21k = dict(type='ImageNet21k', data_root='data/imagenet21k', split='train')
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None

# A batch of 4096: 8 GPUs x 64 pictures x 8 accumulated steps, Swin's published command for its
# ImageNet-22K runs (about 20 GiB of activations per GPU for Focal-L, docs/imagenet.md). The
# learning rates are the 1K recipe's (Swin's 1.25e-4 per 512 pictures: 1e-3 peak, from 1e-6, to
# 1e-5). mmengine's auto_scale_lr counts GPUs x batch per step, not the accumulated steps: 512 here.
train_dataloader = dict(batch_size=64, dataset=imagenet21k)
optim_wrapper = dict(accumulative_counts=8)
auto_scale_lr = dict(base_batch_size=512)
max_epochs = 90
warmup_epochs = 5
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs),
]
# No validation, so no best checkpoint: the last three epochs are kept.
default_hooks = dict(checkpoint=dict(save_best=None))
