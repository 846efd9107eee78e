# Demo: the demo detector (mask_rcnn_focal_t_demo.py, same model, data and schedule) with its
# backbone started from the demo classifier's checkpoint instead of from scratch: the pretrain-
# then-fine-tune chain of ImageNet -> COCO, on the demo's shapes (`make demo` step 3).
# configs/cls/focal_t_demo.py pretrains the same demo-sized backbone on data/demo/imagenet; the
# checkpoint tools/train.py writes for it loads as it is (the classifier's backbone weights,
# strictly; its head and neck are not used; the output norms of stages 0-2, which the classifier
# does not have, are initialised). tools/demo.sh passes the checkpoint it trained:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/demo/cls/epoch_20.pth
_base_ = ['./mask_rcnn_focal_t_demo.py']

# (_delete_: the demo backbone's init_cfg is None, which a dict cannot be merged into.)
model = dict(backbone=dict(
    init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='work_dirs/demo/cls/epoch_20.pth')))
