"""Whole ImageNet classifiers: the official checkpoints and mmpretrain's ``ImageClassifier``.

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
backbone does (see :mod:`mmfocal.engine.pretrained`). Loading is strict: anything else is a
:class:`CheckpointMismatchError` naming the keys.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .pretrained import UNUSED_OFFICIAL_KEYS, CheckpointMismatchError, abbreviate, match_state_dict, warn_non_finite

BACKBONE, HEAD = 'backbone.', 'head.fc.'
_OFFICIAL_HEAD, _OFFICIAL_NORM = 'head.', 'norm.'


def _last_stage(keys) -> int:
    stages = {int(m.group(1)) for k in keys for m in [re.match(r'^(?:backbone\.)?layers\.(\d+)\.', k)] if m}
    if not stages:
        raise CheckpointMismatchError('not a Focal Transformer classifier: no layers.<stage>.* keys')
    return max(stages)


def is_official_classifier(state: Mapping[str, torch.Tensor]) -> bool:
    """An official state dict with its head (``head.weight``) and backbone keys at the top."""
    return 'head.weight' in state and 'patch_embed.proj.weight' in state


def is_classifier_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """mmpretrain's ImageClassifier layout: ``backbone.*`` and ``head.fc.*``, nothing else."""
    return any(k.startswith(HEAD) for k in state) and all(k.startswith((BACKBONE, HEAD)) for k in state)


def official_to_classifier(state: Mapping[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """An official classifier's state dict in mmpretrain's layout; returns (converted, dropped
    index buffers): ``norm.*`` -> ``backbone.norm{last}.*``, ``head.*`` -> ``head.fc.*``, any other
    key -> ``backbone.<key>``."""
    final_norm = f'{BACKBONE}norm{_last_stage(state)}.'
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
    """mmpretrain's layout back to the official one (the inverse of :func:`official_to_classifier`,
    without the buffers): what a backbone's pretrained loader then reads as an official file."""
    final_norm = f'{BACKBONE}norm{_last_stage(state)}.'
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
    """The classifier's tensors in mmpretrain's layout from an official file or an mmengine one;
    returns (state dict, which layout the file had: 'official' | 'mmpretrain', dropped buffers)."""
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


def match_classifier_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Check ``state`` (mmpretrain layout) against the classifier ``model``: its backbone part as
    :func:`~mmfocal.engine.pretrained.match_state_dict` checks a backbone's (the final norm is the
    backbone's ``norm{last}`` here, so it loads), the rest (the head) key for key and shape for
    shape. Returns the keys to load and the model's keys left as initialised; anything else is a
    CheckpointMismatchError listing every offending key."""
    backbone = match_state_dict(model.backbone, OrderedDict(
        (k[len(BACKBONE):], v) for k, v in state.items() if k.startswith(BACKBONE)))
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(BACKBONE)}
    rest = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
    problems = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                for k, v in rest.items() if k in own and v.shape != own[k].shape]
    problems += [f'{k}: not in the model' for k in rest if k not in own]
    problems += [f'{k}: not in the checkpoint' for k in own if k not in rest]
    if problems:
        raise CheckpointMismatchError(f'checkpoint does not fit this {type(model).__name__}\'s head (another number '
                                      'of classes?):\n  ' + '\n  '.join(problems))
    return dict(loaded=[BACKBONE + k for k in backbone['loaded']] + list(rest),
                initialised=[BACKBONE + k for k in backbone['initialised']])


def load_classifier_checkpoint(model: nn.Module, filename: str, map_location='cpu',
                               logger='current') -> dict:
    """Load an official classifier file (converted in memory) or an mmpretrain classifier
    checkpoint into ``model`` strictly, and log what was done with every tensor."""
    from mmengine.runner.checkpoint import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state, layout, dropped = classifier_state_dict(checkpoint)
        warn_non_finite(state, filename, logger)
        report = match_classifier_state_dict(model, state)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f'{filename}: {error}') from None
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys and sorted(incompatible.missing_keys) == sorted(report['initialised'])
    how = (f'an official classifier, converted: norm -> backbone.norm{_last_stage(state)}, head -> head.fc, the '
           f'rest under backbone.; not used: {len(dropped)} index buffers (recomputed)' if layout == 'official'
           else 'an mmpretrain classifier checkpoint')
    print_log(f'{type(model).__name__}: loaded {len(report["loaded"])} tensors from {filename} ({how}); '
              f'initialised (not in the checkpoint): {abbreviate(report["initialised"])}', logger=logger)
    return dict(report, dropped=dropped, layout=layout)


def convert_official_classifier(checkpoint: Mapping) -> Tuple[dict, List[str]]:
    """An official classifier file's contents as an mmengine checkpoint of the mmpretrain
    ImageClassifier of configs/cls/ (``state_dict``; ``meta.backbone`` and ``meta.architecture``
    say which), which ``load_checkpoint(classifier, strict=True)`` takes. Returns the checkpoint and
    the dropped index buffers. NaN or infinite values in it are a warning naming the tensors."""
    from .pretrained import backbone_class_name, infer_architecture
    state, layout, dropped = classifier_state_dict(checkpoint)
    warn_non_finite(state, 'the checkpoint')
    if layout != 'official':
        raise CheckpointMismatchError('already an mmpretrain classifier checkpoint (backbone.*, head.fc.*)')
    official = classifier_to_official(state)
    architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in infer_architecture(official).items()}
    meta = dict(backbone=backbone_class_name(official), architecture=architecture,
                num_classes=int(state[HEAD + 'weight'].shape[0]))
    return dict(state_dict=state, meta=meta), dropped
