# UperNet with a Focal-B backbone on ADE20K; the recipe is Focal-T's, with Focal-B's wider channels.
_base_ = ['./upernet_focal_t_512x512_160k_ade20k.py']

checkpoint_file = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focal-base-is224-ws7.pth'  # noqa: E501
backbone_channels = [128, 256, 512, 1024]
model = dict(
    backbone=dict(arch='base', init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=backbone_channels),
    auxiliary_head=dict(in_channels=backbone_channels[2]))
