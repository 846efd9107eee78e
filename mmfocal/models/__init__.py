"""Models: attention layers at the bottom, backbones (and detector parts) built from them."""
from .backbones import ARCH_SETTINGS, FocalBackbone, FocalFastTransformer, FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalBackbone', 'FocalFastTransformer', 'FocalTransformer']
