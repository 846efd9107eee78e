"""Checkpoints: weights-only loading (safe_load), atomic writes (atomic_checkpoint), strict loading
and conversion of pretrained backbone weights (pretrained)."""
