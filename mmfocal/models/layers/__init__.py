"""Pure-torch building blocks: no OpenMMLab import below this package."""
from .focal_attention import FocalTransformerBlock, FocalWindowAttention

__all__ = ['FocalTransformerBlock', 'FocalWindowAttention']
