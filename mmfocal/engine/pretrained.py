"""Pretrained weights for the Focal backbones: official ImageNet checkpoints as published, or ours.

Both kinds of official checkpoint: the paper's model (focal-*.pth, :class:`FocalTransformer`) and
Focal-fast (focalv2-*.pth, :class:`FocalFastTransformer`); one given to the other backbone is an
error that says so.

Strict by design (unlike mmengine's ``strict=False`` default): every tensor of the checkpoint is
either loaded or named as deliberately unused, every model tensor is either loaded or named as
deliberately initialised, and anything else, such as a shape mismatch from a checkpoint of another
size, is a ``CheckpointMismatchError`` that lists the offending keys.
"""
import logging
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..errors import MMFocalError

# Parts of the official classifier a backbone does not use: the head, the final norm (which a
# classifier's backbone takes: final_norm_for_classifier) and the index/mask buffers it registers
# (we recompute those; they are not learned). Focal-fast's buffers (nearest-token indices and
# their coordinates) are bound to the 224x224 image size it was built for.
UNUSED_OFFICIAL_KEYS = re.compile(r'^(head\.|norm\.)|\.(relative_position_index(_\d+)?|valid_ind_rolled|'
                              r'valid_ind_unfold_\d+|attn_mask|topk_cloest_indice_\d+|topk_cloest_coords_\d+|'
                              r'window_coords)$')
# What tells the two models apart: learned tables (paper model) or bias MLPs (Focal-fast).
_PAPER_MODEL_KEY = re.compile(r'\.attn\.relative_position_bias_table')
_FAST_MODEL_KEY = re.compile(r'\.attn\.(coord2rpb_all\.|topk_cloest_)')
# What a checkpoint may lack and gets initialised instead: the output norms of a dense-prediction
# backbone, and the neighbour tables of a stage that was a single window at 224x224 (stage 4).
_INITIALISABLE = re.compile(r'^norm\d+\.(weight|bias)$|\.relative_position_bias_table_to_neighbors$')


# Relative-position tables and the pooling weights over sub-windows: their shapes depend on the
# window, focal-window and expand sizes, and they are resized to others on request
# (mmfocal.engine.position_tables).
_POSITION_TABLE = re.compile(r'\.(attn\.relative_position_bias_table(_to_neighbors|_to_windows\.\d+)?|'
                             r'pool_layers\.\d+\.weight)$')
RESIZE_HINT = ('relative-position tables differ in shape (a checkpoint made with other window, focal-window or '
               'expand sizes?): add resize_position_tables=True to the Pretrained init_cfg to resize them by '
               'bicubic interpolation')


class CheckpointMismatchError(MMFocalError, ValueError):
    """A checkpoint does not fit the model; the message lists every offending key."""


def extract_state_dict(checkpoint: Mapping, prefix: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """The backbone's tensors from an official (``model``), mmengine (``state_dict``) or plain dict.

    ``prefix`` (e.g. ``'backbone.'``) selects and strips a sub-module's keys, as in a detector
    checkpoint; without it, a checkpoint whose keys all start with ``backbone.`` is stripped too.
    An mmpretrain classifier's (``backbone.*``, ``head.fc.*``) comes back in the official layout,
    final ``norm.*`` and ``head.*`` included, as an official file's does.
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
    from .classifier_checkpoint import classifier_to_official, is_classifier_state_dict
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


def convert_official_state_dict(
        state: Mapping[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Drop what a backbone does not use from an official state dict; return (kept, dropped keys).

    Parameter names are shared with the official model, so nothing is renamed.
    """
    kept, dropped = OrderedDict(), []
    for key, value in state.items():
        if UNUSED_OFFICIAL_KEYS.search(key):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Check ``state`` against ``model`` and return what would be loaded, dropped and initialised.

    Raises CheckpointMismatchError for shape mismatches, unknown keys, or model tensors missing
    from the checkpoint that cannot sensibly be initialised.
    """
    model_kind, checkpoint_kind = checkpoint_kind_of(model.state_dict()), checkpoint_kind_of(state)
    if checkpoint_kind is not None and model_kind is not None and checkpoint_kind != model_kind:
        raise CheckpointMismatchError(
            f'this is a {_KIND_NAMES[checkpoint_kind]} checkpoint, but the model is a {type(model).__name__} '
            f'({_KIND_NAMES[model_kind]}): use {_KIND_BACKBONES[checkpoint_kind]} for it')
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


def load_pretrained(model: nn.Module, filename: str, map_location='cpu', prefix: Optional[str] = None,
                    logger='current', resize_position_tables: bool = False) -> Dict[str, List[str]]:
    """Load a checkpoint file or URL into ``model`` strictly and log what was dropped/initialised.

    ``resize_position_tables``: resize relative-position tables (and 'fc' pooling weights) of other
    window, focal-window or expand sizes to the model's (bicubic, see
    :mod:`mmfocal.engine.position_tables`); each resized tensor is listed in the report's
    ``resized`` and in the log. Without it they are shape mismatches.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state = extract_state_dict(checkpoint, prefix)
        warn_non_finite(state, filename, logger)
        resized = []
        if resize_position_tables:
            from .position_tables import resize_position_tables as resize  # imports the attention layers
            state, resized = resize(model, state)
        state = final_norm_for_classifier(model, state)
        report = match_state_dict(model, state)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f'{filename}: {error}') from None
    report['resized'] = resized
    own = model.state_dict()
    with torch.no_grad():
        for key in report['loaded']:
            own[key].copy_(state[key])
    buffers = [k for k in report['dropped'] if not re.match(r'^(head|norm)\.', k)]
    learned = [k for k in report['dropped'] if k not in buffers]
    print_log(f'{type(model).__name__}: loaded {len(report["loaded"])} tensors from {filename}; '
              f'not used: {abbreviate(learned)} and {len(buffers)} index buffers (recomputed); '
              f'initialised (not in the checkpoint): {abbreviate(report["initialised"])}'
              + (f'; resized position tables: {abbreviate(resized, limit=len(resized))}' if resized else ''),
              logger=logger)
    return report


def final_norm_for_classifier(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``state`` with the classifier's final norm (``norm.*``) as the model's output norm, if the model is a
    classifier's backbone: its one output norm is the last stage's (``out_indices=(last,)``, as configs/cls/ build
    it), which is where the official classifier's final norm sits, so fine-tuning a classifier (ImageNet-22K to 1K)
    keeps it. A dense-prediction backbone's output norms start initialised instead, the final norm not used."""
    own = model.state_dict()
    norms = {int(m.group(1)) for k in own for m in [re.match(r'^norm(\d+)\.', k)] if m}
    stages = {int(m.group(1)) for k in own for m in [re.match(r'^layers\.(\d+)\.', k)] if m}
    if len(norms) != 1 or norms != {max(stages, default=-1)} or 'norm.weight' not in state:
        return state
    (last, ) = norms
    return OrderedDict((f'norm{last}.{k[len("norm."):]}' if re.match(r'^norm\.(weight|bias)$', k) else k, v)
                       for k, v in state.items())


def abbreviate(keys: List[str], limit: int = 12) -> str:
    """The first ``limit`` keys, comma-separated, and how many there are in all ('none' if empty)."""
    if not keys:
        return 'none'
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def _describe(model: nn.Module) -> str:
    dims = getattr(model, 'embed_dims', '?')
    depths = [len(stage.blocks) for stage in getattr(model, 'layers', [])]
    return f'embed_dims={dims}, depths={tuple(depths)}'


_KIND_NAMES = dict(focal='Focal Transformer (paper model)', fast='Focal-fast')
_KIND_BACKBONES = dict(focal='FocalTransformer', fast='FocalFastTransformer')


def checkpoint_kind_of(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """'focal' (the paper's model), 'fast' (Focal-fast) or None (neither kind of attention key)."""
    if any(_FAST_MODEL_KEY.search(k) for k in state):
        return 'fast'
    if any(_PAPER_MODEL_KEY.search(k) for k in state):
        return 'focal'
    return None


def backbone_class_name(state: Mapping[str, torch.Tensor]) -> str:
    """The backbone a checkpoint's state dict is for: 'FocalTransformer' or 'FocalFastTransformer'."""
    return _KIND_BACKBONES[checkpoint_kind_of(state) or 'focal']


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """Backbone arguments (embed_dims, depths, num_heads, use_conv_embed, in_channels) that fit
    ``state``, for the backbone :func:`backbone_class_name` names; a CheckpointMismatchError naming
    the tensor that is missing or of the wrong shape if ``state`` lacks one the sizes come from."""
    stem = _sizing_tensor(state, 'patch_embed.proj.weight', 4)
    fast = checkpoint_kind_of(state) == 'fast'
    depths, num_heads = [], []
    while any(k.startswith(f'layers.{len(depths)}.') for k in state):
        i = len(depths)
        blocks = {int(m.group(1)) for k in state for m in [re.match(rf'layers\.{i}\.blocks\.(\d+)\.', k)] if m}
        if not blocks:
            raise CheckpointMismatchError(f'not a Focal Transformer checkpoint: stage {i} has no blocks '
                                          f'(layers.{i}.* keys, but no layers.{i}.blocks.<n>.*)')
        depths.append(max(blocks) + 1)
        attn = f'layers.{i}.blocks.0.attn'
        if fast:  # the bias MLP's output layer has one row per head
            num_heads.append(_sizing_tensor(state, f'{attn}.coord2rpb_all.0.2.weight', 2).shape[0])
        else:  # the table has one column per head
            num_heads.append(_sizing_tensor(state, f'{attn}.relative_position_bias_table', 2).shape[1])
    return dict(embed_dims=stem.shape[0], depths=tuple(depths), num_heads=tuple(num_heads),
                use_conv_embed=stem.shape[-1] == 7, in_channels=stem.shape[1])


def _sizing_tensor(state: Mapping[str, torch.Tensor], key: str, dims: int) -> torch.Tensor:
    """``state[key]``, which the architecture's sizes are read from, if it is a ``dims``-D tensor."""
    if key not in state:
        raise CheckpointMismatchError(f'not a Focal Transformer checkpoint (or one with tensors missing): no {key}')
    value = state[key]
    if not isinstance(value, torch.Tensor) or value.dim() != dims:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointMismatchError(f'{key} should be a {dims}-D tensor, got {shape}: not a Focal Transformer '
                                      'checkpoint, or a damaged one')
    return value


def warn_non_finite(state: Mapping[str, torch.Tensor], source: str, logger='current') -> List[str]:
    """Log a warning naming the floating-point tensors of ``state`` that hold NaN or infinite values
    (a damaged file, or a diverged run's); return their keys. Loading goes on: the warning says
    what the model takes in."""
    keys = [key for key, value in state.items() if isinstance(value, torch.Tensor) and value.is_floating_point()
            and value.device.type != 'meta' and not bool(torch.isfinite(value).all())]
    if keys:
        print_log(f'{source}: NaN or infinite values in {len(keys)} of its tensors (a damaged file, or one from a run '
                  f'that diverged?): {abbreviate(keys)}', logger=logger, level=logging.WARNING)
    return keys
