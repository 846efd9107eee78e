"""A backbone's tensors out of whatever checkpoint holds them: official, mmengine, detector or classifier."""
from collections import OrderedDict
from typing import Mapping, Optional

import torch

from .classifier_layout import classifier_to_official, is_classifier_state_dict
from .errors import CheckpointMismatchError

__all__ = ['extract_state_dict']


def extract_state_dict(checkpoint: Mapping, prefix: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """The backbone's tensors from an official (``model``), mmengine (``state_dict``) or plain dict.

    A ``module.`` prefix (a distributed wrapper's) is removed. An mmpretrain classifier's state
    dict (``backbone.*``, ``head.fc.*``) comes back in the official layout, final ``norm.*`` and
    ``head.*`` included, as an official file's does.

    Args:
        checkpoint (Mapping): What the checkpoint file holds.
        prefix (str, optional): A sub-module's key prefix to select and strip (``'backbone.'``
            in a detector's checkpoint). Defaults to None: a checkpoint whose keys all start with
            ``backbone.`` is stripped of it, any other taken as it is.

    Returns:
        OrderedDict: The state dict, parameter names to tensors.

    Raises:
        CheckpointMismatchError: ``checkpoint`` is no dict, has keys that are no names or values
            that are no tensors, or no key starts with ``prefix``.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    state = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            state = checkpoint[key]
            break
    not_names = [repr(k)[:40] for k in state if not isinstance(k, str)]
    if not_names:
        raise CheckpointMismatchError(f'checkpoint keys that are not parameter names: {", ".join(not_names[:10])}')
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())
    if prefix in (None, 'backbone.') and is_classifier_state_dict(state):
        # An mmpretrain ImageClassifier's (tools/train.py on configs/cls/): the official layout, so
        # that its final norm and head go the official file's way (not used).
        state, prefix = classifier_to_official(state), None
    if prefix is None and state and all(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise CheckpointMismatchError(f'the checkpoint has no key starting with {prefix!r}')
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointMismatchError(f'checkpoint entries that are not tensors: {not_tensors[:10]}')
    return state
