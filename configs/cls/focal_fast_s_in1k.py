# Focal-fast-S on ImageNet-1K: the Focal-fast-T config with the small model (drop path 0.3).
_base_ = './focal_fast_t_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
