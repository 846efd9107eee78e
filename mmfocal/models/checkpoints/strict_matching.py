"""Strict matching of a state dict against a model: every tensor accounted for.

Strict by design (unlike mmengine's ``strict=False`` default): every tensor of the checkpoint is
either loaded or named as deliberately unused, every model tensor is either loaded or named as
deliberately initialised, and anything else, such as a shape mismatch from a checkpoint of another
size, is a :class:`~mmfocal.models.checkpoints.errors.CheckpointMismatchError` that lists the
offending keys. A checkpoint of one kind of official model given to the other backbone is an
error that says which backbone takes it.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Mapping

import torch
import torch.nn as nn

from .classifier_layout import BACKBONE
from .errors import CheckpointMismatchError
from .official_keys import KIND_BACKBONES, KIND_DESCRIPTIONS, checkpoint_kind_of, convert_official_state_dict
from .reporting import abbreviate

__all__ = ['RESIZE_HINT', 'match_state_dict', 'match_classifier_state_dict', 'final_norm_for_classifier']

# What a checkpoint may lack and gets initialised instead: the output norms of a dense-prediction
# backbone, and the neighbour tables of a stage that was a single window at 224x224 (stage 4).
_INITIALISABLE = re.compile(r'^norm\d+\.(weight|bias)$|\.relative_position_bias_table_to_neighbors$')
# Relative-position tables and the pooling weights over sub-windows: their shapes depend on the
# window, focal-window and expand sizes, and they are resized to others on request
# (mmfocal.models.checkpoints.position_tables).
_POSITION_TABLE = re.compile(r'\.(attn\.relative_position_bias_table(_to_neighbors|_to_windows\.\d+)?|'
                             r'pool_layers\.\d+\.weight)$')
RESIZE_HINT = ('relative-position tables differ in shape (a checkpoint made with other window, focal-window or '
               'expand sizes?): add resize_position_tables=True to the Pretrained init_cfg to resize them by '
               'bicubic interpolation')


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Check a backbone's state dict against the backbone, key for key and shape for shape.

    Args:
        model (nn.Module): The backbone (on any device, the meta device included).
        state (Mapping[str, torch.Tensor]): The state dict, official names.

    Returns:
        dict[str, list[str]]: The keys that would be ``loaded``, ``dropped`` (not used: head,
        final norm, index buffers) and ``initialised`` (model tensors the checkpoint lacks that
        start initialised: output norms, stage-4 neighbour tables).

    Raises:
        CheckpointMismatchError: A checkpoint of the other kind of model, shape mismatches,
            unknown keys, or model tensors missing from the checkpoint that cannot sensibly be
            initialised; the message lists every offending key.
    """
    model_kind, checkpoint_kind = checkpoint_kind_of(model.state_dict()), checkpoint_kind_of(state)
    if checkpoint_kind is not None and model_kind is not None and checkpoint_kind != model_kind:
        raise CheckpointMismatchError(
            f'this is a {KIND_DESCRIPTIONS[checkpoint_kind]} checkpoint, but the model is a {type(model).__name__} '
            f'({KIND_DESCRIPTIONS[model_kind]}): use {KIND_BACKBONES[checkpoint_kind]} for it')
    kept, dropped = convert_official_state_dict(state)
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in kept.items() if k in own and v.shape != own[k].shape]
    unexpected = [k for k in kept if k not in own]
    missing = [k for k in own if k not in kept]
    not_initialisable = [k for k in missing if not _INITIALISABLE.search(k)]
    problems = []
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches (a checkpoint of another model size?):\n  '
                        + '\n  '.join(mismatched[:20]) + ('\n  ...' if len(mismatched) > 20 else ''))
        if any(_POSITION_TABLE.search(m.split(':')[0]) for m in mismatched):
            problems.append(RESIZE_HINT)
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint keys the model does not have: {abbreviate(unexpected)}')
    if not_initialisable:
        problems.append(f'{len(not_initialisable)} model keys missing from the checkpoint: '
                        f'{abbreviate(not_initialisable)}')
    if problems:
        raise CheckpointMismatchError(f'checkpoint does not fit this {type(model).__name__} (' + _describe(model)
                                      + '):\n' + '\n'.join(problems))
    return dict(loaded=list(kept), dropped=dropped, initialised=missing)


def final_norm_for_classifier(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A state dict with the official classifier's final norm as the model's output norm, for a classifier's backbone.

    A classifier's backbone has one output norm, the last stage's (``out_indices=(last,)``, as
    configs/cls/ build it), which is where the official classifier's final norm sits, so
    fine-tuning a classifier (ImageNet-22K to 1K) keeps it. A dense-prediction backbone's output
    norms start initialised instead, the final norm not used.

    Args:
        model (nn.Module): The backbone.
        state (Mapping[str, torch.Tensor]): The state dict, official names.

    Returns:
        Mapping[str, torch.Tensor]: ``state`` with ``norm.*`` renamed ``norm{last}.*`` where the
        model is a classifier's backbone and ``state`` has a final norm; else ``state`` itself.
    """
    own = model.state_dict()
    norms = {int(m.group(1)) for k in own for m in [re.match(r'^norm(\d+)\.', k)] if m}
    stages = {int(m.group(1)) for k in own for m in [re.match(r'^layers\.(\d+)\.', k)] if m}
    if len(norms) != 1 or norms != {max(stages, default=-1)} or 'norm.weight' not in state:
        return state
    (last, ) = norms
    return OrderedDict((f'norm{last}.{k[len("norm."):]}' if re.match(r'^norm\.(weight|bias)$', k) else k, v)
                       for k, v in state.items())


def match_classifier_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Check a classifier's state dict (mmpretrain layout) against the classifier.

    Its backbone part is checked as :func:`match_state_dict` checks a backbone's (the final norm
    is the backbone's ``norm{last}`` here, so it loads), the rest (the head) key for key and shape
    for shape.

    Args:
        model (nn.Module): An mmpretrain ImageClassifier with a Focal backbone.
        state (Mapping[str, torch.Tensor]): The state dict, mmpretrain layout.

    Returns:
        dict[str, list[str]]: The keys to load (``loaded``) and the model's keys left as
        initialised (``initialised``).

    Raises:
        CheckpointMismatchError: Anything else; the message lists every offending key.
    """
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


def _describe(model: nn.Module) -> str:
    dims = getattr(model, 'embed_dims', '?')
    depths = [len(stage.blocks) for stage in getattr(model, 'layers', [])]
    return f'embed_dims={dims}, depths={tuple(depths)}'
