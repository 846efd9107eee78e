"""Metrics the project adds to OpenMMLab's (registered by :mod:`mmfocal.registry`)."""
from .subset_accuracy import SubsetAccuracy

__all__ = ['SubsetAccuracy']
