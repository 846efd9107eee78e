"""Pure-torch building blocks: no OpenMMLab import below this package."""
from .focal_attention import FocalTransformerBlock, FocalWindowAttention
from .focal_fast_attention import FocalFastAttention, FocalFastTransformerBlock

__all__ = ['FocalFastAttention', 'FocalFastTransformerBlock', 'FocalTransformerBlock', 'FocalWindowAttention']
