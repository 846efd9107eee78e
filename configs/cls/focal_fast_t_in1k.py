# Focal-fast-T on ImageNet-1K (configs/focalv2_tiny_useconv_patch4_window7_224.yaml): the Focal-T
# recipe with the authors' faster model (conv stem and focal_topk 128, its defaults). Weight decay
# as the authors': the position-bias MLPs (attn.coord2rpb_all.*) keep it on their weights (their
# optimizer exempts only 1-D parameters and no keyword for this model), as the inherited
# paramwise_cfg does.
_base_ = './focal_t_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='FocalFastTransformer',
        arch='tiny',
        drop_path_rate=0.2,
        out_indices=(3, )))
