"""mmfocal: the Focal Transformer backbone for mmdet and mmseg."""
from .focal_transformer import ARCH_SETTINGS, FocalTransformer
from .registry import MMDET_MODELS, MMSEG_MODELS  # noqa: F401  registers FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalTransformer']
__version__ = '0.1.0'
