"""Analysis: what one focal-attention query attends to (weights recorded in the model's forward
pass, key positions from the recorded key index), the training histories mmengine logs, and the
parameters and FLOPs of models and backbones (``flops``). Drawing is in :mod:`mmfocal.visualization`;
the command lines in ``tools/analysis/`` and ``tools/get_flops.py``."""
