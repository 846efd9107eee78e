"""mmfocal: the Focal Transformer backbone for mmdet and mmseg."""
from .focal_transformer import ARCH_SETTINGS, FocalTransformer
from .registry import MMDET_MODELS, MMSEG_MODELS  # noqa: F401  registers FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalTransformer']
__version__ = '0.1.0'

from . import atomic_checkpoint, safe_load  # noqa: E402

safe_load.install()  # weights-only loading that accepts exactly what mmengine/mmdet/mmseg checkpoints hold
atomic_checkpoint.install()  # checkpoints are written to a temporary file, then renamed
