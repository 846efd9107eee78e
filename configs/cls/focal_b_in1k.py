# Focal-B on ImageNet-1K: the Focal-T recipe with the base model (drop path 0.5, 1024 features).
# The authors ran it at 64 pictures per GPU with 2 accumulation steps (the same total of 1024).
_base_ = './focal_t_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
