"""Models: attention layers at the bottom (:mod:`.layers`), the checkpoint formats above them
(:mod:`.checkpoints`), and the backbones and detector parts built from both."""
from .backbones import ARCH_SETTINGS, FocalBackbone, FocalFastTransformer, FocalTransformer

__all__ = ['ARCH_SETTINGS', 'FocalBackbone', 'FocalFastTransformer', 'FocalTransformer']
