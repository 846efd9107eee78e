# Focal-fast-B on ImageNet-1K: the Focal-fast-T config with the base model (drop path 0.5, 1024
# features).
_base_ = './focal_fast_t_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
