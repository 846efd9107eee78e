from .focal_fast_transformer import FocalFastTransformer
from .focal_transformer import ARCH_SETTINGS, FocalBackbone, FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalBackbone', 'FocalFastTransformer', 'FocalTransformer']
