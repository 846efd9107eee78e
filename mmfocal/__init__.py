"""mmfocal: the Focal Transformer backbone for mmdet, mmseg and mmpretrain.

Layout (as mmdet's own):

* ``mmfocal.models.layers``: pure-torch attention (no OpenMMLab import);
* ``mmfocal.models.backbones``: the backbones (mmengine ``BaseModule``), built from the layers;
  ``mmfocal.models.dense_heads`` / ``losses`` / ``task_modules`` / ``detectors``: detector parts;
* ``mmfocal.engine``: checkpoint safety (weights-only loading, atomic writes), strict loading and
  conversion of pretrained weights, training hooks;
* ``mmfocal.deployment``: export (ONNX, torch.export) and inference outside PyTorch;
* ``mmfocal.cli``: what the scripts under ``tools/`` share;
* ``mmfocal.registry``: registration in mmdet's, mmseg's and mmpretrain's registries, the top layer.

``import mmfocal`` registers everything and makes checkpoints load as data only and be written
atomically.
"""
from .models import ARCH_SETTINGS, FocalFastTransformer, FocalTransformer
from .registry import MMDET_MODELS, MMSEG_MODELS  # noqa: F401  registers the modules
from .version import __version__

__all__ = ['ARCH_SETTINGS', 'FocalFastTransformer', 'FocalTransformer', '__version__']

from .engine import atomic_checkpoint, safe_load  # noqa: E402

safe_load.install()  # weights-only loading that accepts exactly what mmengine/mmdet/mmseg/mmpretrain checkpoints hold
atomic_checkpoint.install()  # checkpoints are written to a temporary file, then renamed
