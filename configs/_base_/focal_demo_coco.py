# What the demo detectors share: the COCO-format shapes of tools/make_demo_data.py (4 classes,
# pictures at 128 pixels, under data/demo/coco/) and the demo's 12-epoch schedule (75 iterations of
# 8 pictures each; AdamW at 1e-3 with warm-up and cosine decay, as the detector's base config),
# which the Mask R-CNN demo cuts to 2 epochs (`make demo` trains it twice).
# A demo config lists this file in `_base_` and builds its loaders and schedule from these
# entries; they are prefixed `demo_` because mmengine refuses a key that two bases both define.
demo_data_root = 'data/demo/coco/'
demo_classes = ('circle', 'square', 'triangle', 'cross')
demo_metainfo = dict(classes=demo_classes,
                     palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 160, 0)])
demo_img_scale = (128, 128)
demo_norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)
demo_train_dataset = dict(
    data_root=demo_data_root,
    metainfo=demo_metainfo,
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=16))
demo_val_dataset = dict(
    data_root=demo_data_root,
    metainfo=demo_metainfo,
    ann_file='annotations/instances_val.json',
    data_prefix=dict(img='val/'))
demo_evaluator = dict(ann_file=demo_data_root + 'annotations/instances_val.json')
demo_max_epochs = 12
demo_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=demo_max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
demo_default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=2))
