# Mask R-CNN, Focal-fast-T, 3x: the Focal-T 3x config (schedule, augmentation, AdamW, drop path 0.2)
# with the authors' faster backbone and its published ImageNet-1K checkpoint.
#
# Weight decay: the no-decay groups stay the Focal configs' (norms, relative-position tables).
# Focal-fast has no position tables; its position biases come from small MLPs
# (`attn.coord2rpb_all.*`) whose weights keep their decay: they are an ordinary shared function of
# the offset, not one free value per offset that decay would pull towards "no position", and the
# authors' ImageNet training decayed them too (their optimizer exempts only 1-D parameters).
_base_ = './mask_rcnn_focal_t_3x.py'

focal_fast_checkpoint_url = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focalv2-{}-useconv-is224-ws7.pth'  # noqa: E501
model = dict(
    backbone=dict(
        type='FocalFastTransformer',
        init_cfg=dict(type='Pretrained', checkpoint=focal_fast_checkpoint_url.format('tiny'))))
