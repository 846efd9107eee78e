"""The official models' outputs and checkpoint layouts, carried in tests/data (see its README)."""
import functools
import io
import json
import lzma
import os

import torch
import torch.nn.functional as F

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


@functools.lru_cache(maxsize=None)
def _read_xz(file_name: str) -> bytes:
    with lzma.open(os.path.join(DATA, file_name + '.xz')) as file:
        return file.read()


def load_reference(name: str) -> dict:
    """``official_args``, ``state_dict`` (official keys, float16) and ``cases``: each case an
    ``input`` (B, 3, H, W) and per stage ``positions`` (n,) token indices into the row-major
    ``map_size`` grid with the official ``tokens`` (B, n, C) there. A fresh copy each call."""
    return torch.load(io.BytesIO(_read_xz(f'{name}.pt')), weights_only=True)


def official_kwargs(args: dict) -> dict:
    """FocalTransformer arguments for the official constructor's ``official_args`` (every stage out)."""
    return dict(embed_dims=args['embed_dim'], depths=tuple(args['depths']), num_heads=tuple(args['num_heads']),
                window_size=args['window_size'], focal_pool=args['focal_pool'],
                focal_levels=tuple(args['focal_levels']), focal_windows=tuple(args['focal_windows']),
                expand_sizes=tuple(args['expand_sizes']), expand_layer=args['expand_layer'],
                use_conv_embed=args.get('use_conv_embed', False), drop_path_rate=0.,
                out_indices=tuple(range(len(args['depths']))))


def official_checkpoint_entries(version: int = 1) -> dict:
    """For each published checkpoint file: ``constructor``, ``n_parameters`` and every key's
    ``shape``, ``dtype`` and ``kind`` (see tests/data/README.md)."""
    name = 'official_checkpoint_keys.json' if version == 1 else 'official_v2_checkpoint_keys.json'
    return json.loads(_read_xz(name))


def assert_stages_match(outs, case, atol=1e-4):
    """Backbone outputs (B, C, H, W) through their default-initialised LayerNorms against the official
    stage tokens of ``case`` at the stored positions."""
    assert len(outs) == len(case['stages'])
    for out, stage in zip(outs, case['stages']):
        B, C, H, W = out.shape
        assert (H, W) == tuple(stage['map_size'])
        got = out.flatten(2).transpose(1, 2)[:, stage['positions']]
        torch.testing.assert_close(got, F.layer_norm(stage['tokens'], (C, )), atol=atol, rtol=0)


def write_reference_file(file_name: str, directory) -> str:
    """``tests/data/<file_name>.xz`` decompressed into ``directory``, for tests of code that reads
    files (a checkpoint path in a config); returns the path."""
    path = os.path.join(str(directory), file_name)
    with open(path, 'wb') as file:
        file.write(_read_xz(file_name))
    return path


def official_classifier_logits(backbone, state, x):
    """The official classifier's logits from ``backbone`` (stage 4 its last output) with the official
    final norm and head of ``state`` (an official-format state dict): the final LayerNorm over the
    stage-4 tokens is the backbone's ``norm3`` loaded with ``norm.*`` (as mmpretrain's classifier maps
    it), then average pooling over tokens and the linear ``head.*``."""
    last = backbone.num_stages - 1
    assert backbone.out_indices[-1] == last, 'the backbone must output its last stage'
    getattr(backbone, f'norm{last}').load_state_dict({'weight': state['norm.weight'], 'bias': state['norm.bias']})
    features = backbone(x)[-1]  # (B, C, H, W)
    return F.linear(features.mean((2, 3)), state['head.weight'], state['head.bias'])
