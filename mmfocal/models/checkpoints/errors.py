"""The error a checkpoint that does not fit its model raises."""
from ...errors import MMFocalError

__all__ = ['CheckpointMismatchError']


class CheckpointMismatchError(MMFocalError, ValueError):
    """A checkpoint does not fit the model; the message lists every offending key."""
