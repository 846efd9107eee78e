"""Pretrained weights for FocalTransformer: official ImageNet checkpoints as published, or ours.

Strict by design (unlike mmengine's ``strict=False`` default): every tensor of the checkpoint is
either loaded or named as deliberately unused, every model tensor is either loaded or named as
deliberately initialised, and anything else, such as a shape mismatch from a checkpoint of another
size, is a ``CheckpointMismatchError`` that lists the offending keys.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

# Parts of the official classifier a backbone does not use: the head, the final norm and the
# index/mask buffers it registers (we recompute those; they are not learned).
_UNUSED_OFFICIAL = re.compile(r'^(head\.|norm\.)|\.(relative_position_index(_\d+)?|valid_ind_rolled|'
                              r'valid_ind_unfold_\d+|attn_mask)$')
# What a checkpoint may lack and gets initialised instead: the output norms of a dense-prediction
# backbone, and the neighbour tables of a stage that was a single window at 224x224 (stage 4).
_INITIALISABLE = re.compile(r'^norm\d+\.(weight|bias)$|\.relative_position_bias_table_to_neighbors$')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model; the message lists every offending key."""


def extract_state_dict(checkpoint: Mapping, prefix: Optional[str] = None) -> 'OrderedDict[str, torch.Tensor]':
    """The backbone's tensors from an official (``model``), mmengine (``state_dict``) or plain dict.

    ``prefix`` (e.g. ``'backbone.'``) selects and strips a sub-module's keys, as in a detector
    checkpoint; without it, a checkpoint whose keys all start with ``backbone.`` is stripped too.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    state = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            state = checkpoint[key]
            break
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in state.items())
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


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Drop what a backbone does not use from an official state dict; return (kept, dropped keys).

    Parameter names are shared with the official model, so nothing is renamed.
    """
    kept, dropped = OrderedDict(), []
    for key, value in state.items():
        if _UNUSED_OFFICIAL.search(key):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Check ``state`` against ``model`` and return what would be loaded, dropped and initialised.

    Raises CheckpointMismatchError for shape mismatches, unknown keys, or model tensors missing
    from the checkpoint that cannot sensibly be initialised.
    """
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
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint keys the model does not have: {_abbrev(unexpected)}')
    if not_initialisable:
        problems.append(f'{len(not_initialisable)} model keys missing from the checkpoint: '
                        f'{_abbrev(not_initialisable)}')
    if problems:
        raise CheckpointMismatchError('checkpoint does not fit this FocalTransformer (' + _describe(model)
                                      + '):\n' + '\n'.join(problems))
    return dict(loaded=list(kept), dropped=dropped, initialised=missing)


def load_pretrained(model: nn.Module, filename: str, map_location='cpu', prefix: Optional[str] = None,
                    logger='current') -> Dict[str, List[str]]:
    """Load a checkpoint file or URL into ``model`` strictly and log what was dropped/initialised."""
    from mmengine.runner.checkpoint import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state = extract_state_dict(checkpoint, prefix)
        report = match_state_dict(model, state)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f'{filename}: {error}') from None
    own = model.state_dict()
    with torch.no_grad():
        for key in report['loaded']:
            own[key].copy_(state[key])
    buffers = [k for k in report['dropped'] if not re.match(r'^(head|norm)\.', k)]
    learned = [k for k in report['dropped'] if k not in buffers]
    print_log(f'FocalTransformer: loaded {len(report["loaded"])} tensors from {filename}; '
              f'not used: {_abbrev(learned)} and {len(buffers)} index buffers (recomputed); '
              f'initialised (not in the checkpoint): {_abbrev(report["initialised"])}', logger=logger)
    return report


def _abbrev(keys: List[str], limit: int = 12) -> str:
    if not keys:
        return 'none'
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def _describe(model: nn.Module) -> str:
    dims = getattr(model, 'embed_dims', '?')
    depths = [len(stage.blocks) for stage in getattr(model, 'layers', [])]
    return f'embed_dims={dims}, depths={tuple(depths)}'


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """FocalTransformer arguments (embed_dims, depths, num_heads, use_conv_embed) that fit ``state``."""
    try:
        stem = state['patch_embed.proj.weight']
    except KeyError:
        raise CheckpointMismatchError('not a Focal Transformer checkpoint: no patch_embed.proj.weight') from None
    depths, num_heads = [], []
    while any(k.startswith(f'layers.{len(depths)}.') for k in state):
        i = len(depths)
        blocks = {int(m.group(1)) for k in state for m in [re.match(rf'layers\.{i}\.blocks\.(\d+)\.', k)] if m}
        depths.append(max(blocks) + 1)
        num_heads.append(state[f'layers.{i}.blocks.0.attn.relative_position_bias_table'].shape[1])
    return dict(embed_dims=stem.shape[0], depths=tuple(depths), num_heads=tuple(num_heads),
                use_conv_embed=stem.shape[-1] == 7, in_channels=stem.shape[1])
