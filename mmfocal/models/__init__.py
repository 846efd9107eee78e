"""Models: attention layers at the bottom, backbones (and detector parts) built from them."""
from .backbones import ARCH_SETTINGS, FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalTransformer']
