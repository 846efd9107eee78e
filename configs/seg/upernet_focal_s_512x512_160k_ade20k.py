# UperNet with a Focal-S backbone on ADE20K; the recipe is Focal-T's (same channels, deeper stage 3).
_base_ = ['./upernet_focal_t_512x512_160k_ade20k.py']

checkpoint_file = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focal-small-is224-ws7.pth'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)))
