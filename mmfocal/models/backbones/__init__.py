from .focal_transformer import ARCH_SETTINGS, FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalTransformer']
