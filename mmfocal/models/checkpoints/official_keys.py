"""The official checkpoints' keys: which model a state dict is for, its sizes, and what a backbone
does not use.

Both kinds of official checkpoint (microsoft/Focal-Transformer) share the backbone's parameter
names: the paper's model (``focal-*.pth``, :class:`~mmfocal.models.backbones.FocalTransformer`),
told apart by its learned relative-position tables, and Focal-fast (``focalv2-*.pth``,
:class:`~mmfocal.models.backbones.FocalFastTransformer`), by its position-bias MLPs.
"""
import re
from collections import OrderedDict
from typing import List, Mapping, Optional, Tuple

import torch

from .errors import CheckpointMismatchError

__all__ = ['UNUSED_OFFICIAL_KEYS', 'KIND_DESCRIPTIONS', 'KIND_BACKBONES', 'checkpoint_kind_of', 'backbone_class_name',
           'infer_architecture', 'convert_official_state_dict']

# Parts of the official classifier a backbone does not use: the head, the final norm (which a
# classifier's backbone takes: strict_matching.final_norm_for_classifier) and the index/mask
# buffers it registers (recomputed; they are not learned). Focal-fast's buffers (nearest-token
# indices and their coordinates) are bound to the 224x224 image size it was built for.
UNUSED_OFFICIAL_KEYS = re.compile(r'^(head\.|norm\.)|\.(relative_position_index(_\d+)?|valid_ind_rolled|'
                                  r'valid_ind_unfold_\d+|attn_mask|topk_cloest_indice_\d+|topk_cloest_coords_\d+|'
                                  r'window_coords)$')
# What tells the two models apart: learned tables (paper model) or bias MLPs (Focal-fast).
_PAPER_MODEL_KEY = re.compile(r'\.attn\.relative_position_bias_table')
_FAST_MODEL_KEY = re.compile(r'\.attn\.(coord2rpb_all\.|topk_cloest_)')

# For each kind of checkpoint: what messages call it, and the backbone that takes it.
KIND_DESCRIPTIONS = dict(focal='Focal Transformer (paper model)', fast='Focal-fast')
KIND_BACKBONES = dict(focal='FocalTransformer', fast='FocalFastTransformer')


def checkpoint_kind_of(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Which official model a state dict is for.

    Args:
        state (Mapping[str, torch.Tensor]): A backbone's or a model's state dict, official names.

    Returns:
        str | None: 'focal' (the paper's model), 'fast' (Focal-fast), or None where it has
        neither kind of attention key.
    """
    if any(_FAST_MODEL_KEY.search(k) for k in state):
        return 'fast'
    if any(_PAPER_MODEL_KEY.search(k) for k in state):
        return 'focal'
    return None


def backbone_class_name(state: Mapping[str, torch.Tensor]) -> str:
    """The backbone a state dict is for.

    Args:
        state (Mapping[str, torch.Tensor]): A state dict with official names.

    Returns:
        str: 'FocalTransformer' or 'FocalFastTransformer' (the former where neither kind of
        attention key is there).
    """
    return KIND_BACKBONES[checkpoint_kind_of(state) or 'focal']


def infer_architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """The backbone arguments that fit a state dict, for the backbone :func:`backbone_class_name` names.

    Args:
        state (Mapping[str, torch.Tensor]): A state dict with official names.

    Returns:
        dict: ``embed_dims``, ``depths``, ``num_heads``, ``use_conv_embed`` and ``in_channels``.

    Raises:
        CheckpointMismatchError: A tensor the sizes are read from is missing or of the wrong
            shape, or a stage has no blocks; the message names it.
    """
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


def convert_official_state_dict(
        state: Mapping[str, torch.Tensor]) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Drop what a backbone does not use from an official state dict.

    Parameter names are shared with the official model, so nothing is renamed.

    Args:
        state (Mapping[str, torch.Tensor]): An official state dict.

    Returns:
        tuple[OrderedDict, list[str]]: The tensors kept, and the keys dropped (head, final norm,
        index buffers).
    """
    kept, dropped = OrderedDict(), []
    for key, value in state.items():
        if UNUSED_OFFICIAL_KEYS.search(key):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped
