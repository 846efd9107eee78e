"""What the loaders say about a checkpoint's keys: key lists cut short for a message, and the
warning for tensors that hold NaN or infinite values."""
import logging
from typing import List, Mapping

import torch
from mmengine.logging import print_log

__all__ = ['abbreviate', 'warn_non_finite']


def abbreviate(keys: List[str], limit: int = 12) -> str:
    """The first keys of a list, comma-separated, and how many there are in all.

    Args:
        keys (list[str]): The keys to name.
        limit (int): How many to name. Defaults to 12.

    Returns:
        str: ``'a, b, ... (N in all)'``, or ``'none'`` for an empty list.
    """
    if not keys:
        return 'none'
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def warn_non_finite(state: Mapping[str, torch.Tensor], source: str, logger='current') -> List[str]:
    """Log a warning naming the floating-point tensors that hold NaN or infinite values.

    Such values come from a damaged file or from a run that diverged. Loading goes on: the warning
    says what the model takes in. Tensors on the meta device are not checked.

    Args:
        state (Mapping[str, torch.Tensor]): The state dict to check.
        source (str): What the message names as the state dict's origin (a file name).
        logger (str | logging.Logger): Where the warning goes, as for mmengine's ``print_log``.
            Defaults to 'current'.

    Returns:
        list[str]: The keys of the tensors with NaN or infinite values.
    """
    keys = [key for key, value in state.items() if isinstance(value, torch.Tensor) and value.is_floating_point()
            and value.device.type != 'meta' and not bool(torch.isfinite(value).all())]
    if keys:
        print_log(f'{source}: NaN or infinite values in {len(keys)} of its tensors (a damaged file, or one from a run '
                  f'that diverged?): {abbreviate(keys)}', logger=logger, level=logging.WARNING)
    return keys
