"""Test-time augmentation models (mmdet's folder name)."""
from .det_mask_tta import DetMaskTTAModel

__all__ = ['DetMaskTTAModel']
