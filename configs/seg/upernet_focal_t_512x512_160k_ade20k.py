# UperNet with a Focal-T backbone on ADE20K: 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# The Focal authors train segmentation with Swin Transformer's recipe, so everything not stated
# here is mmseg's own UperNet/ADE20K/160k setup, exactly as its Swin configs use it.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

checkpoint_file = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focal-tiny-is224-ws7.pth'  # noqa: E501
# Channels of the four backbone outputs (strides 4/8/16/32): embed_dims * 2**stage.
backbone_channels = [96, 192, 384, 768]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,  # the base's backbone is Swin; none of its arguments apply
        type='FocalTransformer',
        arch='tiny',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=backbone_channels, num_classes=150),
    # The FCN auxiliary head reads the stride-16 map (in_index=2 in the base).
    auxiliary_head=dict(in_channels=backbone_channels[2], num_classes=150))

# AdamW; no weight decay on any relative-position table (the fine-level, neighbour and pooled-window
# tables all contain this name) nor on any normalisation layer, the backbone's LayerNorms and the
# heads' BatchNorms alike.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=1500, end=160000),
]

# 2 images per GPU on 8 GPUs. On another number of GPUs, `tools/train.py --auto-scale-lr` scales
# the lr above, which is for this total batch of 16.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Multi-scale + flip testing ("mIoU (MS)"), as in Swin's protocol: each ratio scales the
# single-scale test size (2048, 512), not the original image, so ratio 1.0 is the single-scale
# input. Use with `tools/test.py CONFIG CKPT --tta`; tta_model (SegTTAModel, averaging the softmax
# of every view) comes from mmseg's default runtime.
tta_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(tta_scale[0] * r), int(tta_scale[1] * r)), keep_ratio=True)
             for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
