"""Whole ImageNet classifiers in two layouts: the official checkpoints' and mmpretrain's ``ImageClassifier``'s.

Two layouts of the same tensors:

* official (microsoft/Focal-Transformer's ``focal-*.pth`` / ``focalv2-*.pth``, weights under
  ``model``): the backbone's keys at the top (``patch_embed.*``, ``layers.*``), the final LayerNorm
  ``norm.*``, the linear head ``head.*`` and index buffers;
* mmpretrain's ``ImageClassifier`` with our backbone (``out_indices=(last stage,)``),
  ``GlobalAveragePooling`` and ``LinearClsHead`` (what ``tools/train.py`` writes for a config of
  ``configs/cls/``): ``backbone.*``, the final norm as the backbone's output norm
  ``backbone.norm{last}.*``, and ``head.fc.*``.

The mapping is one to one but for the official index buffers, which are dropped (the model
recomputes them). The configs' classifier is the official 224x224 model, whose stage 4 (a single
7x7 window) has no rolled keys (``expand_sizes=(3, 3, 3, 0)``); a classifier built with them (to
train at a larger size) takes an official file with those tables initialised, as a detection
backbone does (:mod:`mmfocal.models.checkpoints.strict_matching`).
"""
import re
from collections import OrderedDict
from typing import List, Mapping, Tuple

import torch

from .errors import CheckpointMismatchError
from .official_keys import UNUSED_OFFICIAL_KEYS, backbone_class_name, infer_architecture
from .reporting import abbreviate, warn_non_finite

__all__ = ['BACKBONE', 'HEAD', 'last_stage', 'is_official_classifier', 'is_classifier_state_dict',
           'official_to_classifier', 'classifier_to_official', 'classifier_state_dict', 'convert_official_classifier']

# mmpretrain's key prefixes of the backbone and of the head's linear layer.
BACKBONE, HEAD = 'backbone.', 'head.fc.'
_OFFICIAL_HEAD, _OFFICIAL_NORM = 'head.', 'norm.'


def last_stage(keys) -> int:
    """The index of the last stage a state dict has, in either layout.

    Args:
        keys (Iterable[str]): The state dict's keys.

    Returns:
        int: The largest ``i`` of the ``layers.{i}.*`` (or ``backbone.layers.{i}.*``) keys.

    Raises:
        CheckpointMismatchError: There is no such key.
    """
    stages = {int(m.group(1)) for k in keys for m in [re.match(r'^(?:backbone\.)?layers\.(\d+)\.', k)] if m}
    if not stages:
        raise CheckpointMismatchError('not a Focal Transformer classifier: no layers.<stage>.* keys')
    return max(stages)


def is_official_classifier(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is an official classifier's: its head (``head.weight``) and backbone keys at the top.

    Args:
        state (Mapping[str, torch.Tensor]): The state dict.

    Returns:
        bool: True for the official layout with a head.
    """
    return 'head.weight' in state and 'patch_embed.proj.weight' in state


def is_classifier_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is in mmpretrain's ImageClassifier layout: ``backbone.*`` and ``head.fc.*``, nothing else.

    Args:
        state (Mapping[str, torch.Tensor]): The state dict.

    Returns:
        bool: True for mmpretrain's layout.
    """
    return any(k.startswith(HEAD) for k in state) and all(k.startswith((BACKBONE, HEAD)) for k in state)


def official_to_classifier(state: Mapping[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """An official classifier's state dict in mmpretrain's layout.

    ``norm.*`` becomes ``backbone.norm{last}.*``, ``head.*`` becomes ``head.fc.*``, any other key
    ``backbone.<key>``; the index buffers are dropped.

    Args:
        state (Mapping[str, torch.Tensor]): An official classifier's state dict.

    Returns:
        tuple[OrderedDict, list[str]]: The converted state dict and the dropped index buffers.
    """
    final_norm = f'{BACKBONE}norm{last_stage(state)}.'
    converted, dropped = OrderedDict(), []
    for key, value in state.items():
        if key.startswith(_OFFICIAL_HEAD):
            converted[HEAD + key[len(_OFFICIAL_HEAD):]] = value
        elif key.startswith(_OFFICIAL_NORM):
            converted[final_norm + key[len(_OFFICIAL_NORM):]] = value
        elif UNUSED_OFFICIAL_KEYS.search(key):
            dropped.append(key)
        else:
            converted[BACKBONE + key] = value
    return converted, dropped


def classifier_to_official(state: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain's layout back to the official one.

    The inverse of :func:`official_to_classifier`, without the buffers: what a backbone's
    pretrained loader then reads as an official file.

    Args:
        state (Mapping[str, torch.Tensor]): A state dict in mmpretrain's layout.

    Returns:
        OrderedDict: The state dict in the official layout.
    """
    final_norm = f'{BACKBONE}norm{last_stage(state)}.'
    converted = OrderedDict()
    for key, value in state.items():
        if key.startswith(HEAD):
            converted[_OFFICIAL_HEAD + key[len(HEAD):]] = value
        elif key.startswith(final_norm):
            converted[_OFFICIAL_NORM + key[len(final_norm):]] = value
        else:
            converted[key[len(BACKBONE):]] = value
    return converted


def classifier_state_dict(checkpoint: Mapping) -> Tuple['OrderedDict[str, torch.Tensor]', str, List[str]]:
    """The classifier's tensors in mmpretrain's layout from an official checkpoint or an mmengine one.

    Args:
        checkpoint (Mapping): What the file holds: weights under ``state_dict`` or ``model``, or
            at the top; a ``module.`` prefix (a distributed wrapper's) is removed.

    Returns:
        tuple[OrderedDict, str, list[str]]: The state dict, which layout the file had
        ('official' or 'mmpretrain') and the dropped index buffers.

    Raises:
        CheckpointMismatchError: ``checkpoint`` is not a dict, or a state dict of neither layout.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    state = next((checkpoint[k] for k in ('state_dict', 'model') if isinstance(checkpoint.get(k), Mapping)),
                 checkpoint)
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())
    if is_official_classifier(state):
        converted, dropped = official_to_classifier(state)
        return converted, 'official', dropped
    if is_classifier_state_dict(state):
        return state, 'mmpretrain', []
    raise CheckpointMismatchError(
        'neither an official Focal Transformer classifier (patch_embed.*, layers.*, norm.*, head.*) nor an '
        f'mmpretrain ImageClassifier (backbone.*, head.fc.*); its keys begin {abbreviate(list(state), 6)}')


def convert_official_classifier(checkpoint: Mapping) -> Tuple[dict, List[str]]:
    """An official classifier file's contents as an mmengine checkpoint of configs/cls/'s ImageClassifier.

    The result is what ``mmengine.runner.load_checkpoint(classifier, strict=True)`` takes. NaN or
    infinite values are a warning naming the tensors.

    Args:
        checkpoint (Mapping): What the official file holds.

    Returns:
        tuple[dict, list[str]]: The checkpoint (``state_dict``, and ``meta`` with ``backbone``,
        ``architecture`` and ``num_classes``) and the dropped index buffers.

    Raises:
        CheckpointMismatchError: Not an official classifier (an mmpretrain checkpoint already,
            or neither layout).
    """
    state, layout, dropped = classifier_state_dict(checkpoint)
    warn_non_finite(state, 'the checkpoint')
    if layout != 'official':
        raise CheckpointMismatchError('already an mmpretrain classifier checkpoint (backbone.*, head.fc.*)')
    official = classifier_to_official(state)
    architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in infer_architecture(official).items()}
    meta = dict(backbone=backbone_class_name(official), architecture=architecture,
                num_classes=int(state[HEAD + 'weight'].shape[0]))
    return dict(state_dict=state, meta=meta), dropped
