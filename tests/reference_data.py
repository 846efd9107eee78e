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
