# Demo: ImageNet-style pretraining of the demo-sized Focal backbone on the classification shapes of
# tools/make_demo_data.py (data/demo/imagenet: the detection demo's four classes, one shape per
# picture), small enough for 2 CPU cores (`make demo` step 2). The demo detector
# (configs/det/mask_rcnn_focal_t_demo_pretrained.py) then starts from the checkpoint it writes.
#
# It is focal_t_in1k.py (mmpretrain's ImageClassifier and ImageNet dataset, the authors' recipe)
# with the changes a laptop needs:
# - the DEMO-SIZED Focal backbone of the demo detector and segmenter
#   (configs/_base_/focal_demo_backbone.py: embed_dims 32, depths (1,1,2,1), 1.5 M parameters),
#   so that they can load this classifier's backbone; its head classifies 4 classes from 256
#   channels;
# - data: data/demo/imagenet, 1600 training and 200 val pictures of about 64x56 pixels, one whole
#   shape each, bright on a darkened background, in a hue drawn whatever its class (shape is the
#   only cue); crops of 56 pixels (a 56-pixel map is 2 windows across: 64 would pad it to 3),
#   taken from at least 70% of the picture; test: short side 64, centre crop 56 (ImageNet's
#   256 -> 224);
# - the recipe of a few minutes, not of 300 epochs: batch 32, AdamW at 5e-4 (2e-3 did not get off
#   chance, 1e-3 was slower: docs/demo.md), 1 warm-up epoch, then the base's cosine decay, 20
#   epochs of 50 iterations, validated every 4; no label smoothing, drop path, Mixup / CutMix,
#   RandAugment or random erasing.
_base_ = ['./focal_t_in1k.py', '../_base_/focal_demo_backbone.py']

data_root = 'data/demo/imagenet'
classes = ('circle', 'square', 'triangle', 'cross')
crop_size = 56
resize_edge = 64  # crop_size * 256 / 224

# A thousand iterations learn faster without the regularisers of a 300-epoch schedule.
model = dict(
    backbone=dict(_base_.focal_demo_backbone, drop_path_rate=0.),
    head=dict(in_channels=_base_.focal_demo_channels[-1], num_classes=len(classes),
              loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=None)
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(step, scale=crop_size, crop_ratio_range=(0.7, 1.0)) if step['type'] == 'RandomResizedCrop' else step
    for step in _base_.train_pipeline if step['type'] not in ('RandAugment', 'RandomErasing')
]
test_pipeline = [
    dict(step, scale=resize_edge) if step['type'] == 'ResizeEdge' else
    dict(step, crop_size=crop_size) if step['type'] == 'CenterCrop' else step
    for step in _base_.test_pipeline
]
demo_dataset = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(batch_size=32, num_workers=1, persistent_workers=True,
                        dataset=dict(**demo_dataset, pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=1, persistent_workers=True,
                      dataset=dict(**demo_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
# Top-1 (top-5 of 4 classes is always 100%), and top-1 apart on the pictures whose shape is not in
# its class's typical colour (tools/make_demo_data.py's imagenet/meta/val_colours.txt): a
# classifier that learned colour rather than shape is near chance there.
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='SubsetAccuracy', list_name='{split}_colours.txt', subset_names=('atypical', 'typical'),
         prefix='colour'),
]
test_evaluator = val_evaluator

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(_base_.param_scheduler[0], end=1), dict(_base_.param_scheduler[1], begin=1)]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=4, max_keep_ckpts=1))
auto_scale_lr = dict(base_batch_size=32)
# The same draws every run (the demo's numbers repeat); --cfg-options randomness.seed=N for others.
randomness = dict(seed=0)
