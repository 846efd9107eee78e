# UperNet with a Focal-fast-S backbone on ADE20K: the Focal-S recipe (512x512, 160k, AdamW,
# drop path 0.3) with the authors' faster backbone and its published ImageNet-1K checkpoint.
# No-decay groups as Focal-S: the position-bias MLPs (`attn.coord2rpb_all.*`) keep their weight
# decay, as in the authors' ImageNet training: they are a shared function of the offset, not a
# table of one free bias per offset (see configs/det/mask_rcnn_focal_fast_t_3x.py).
_base_ = ['./upernet_focal_s_512x512_160k_ade20k.py']

checkpoint_file = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focalv2-small-useconv-is224-ws7.pth'  # noqa: E501
model = dict(backbone=dict(type='FocalFastTransformer', init_cfg=dict(checkpoint=checkpoint_file)))
