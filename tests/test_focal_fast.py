"""FocalFastTransformer (the authors' Focal-fast): the official numbers through mmdet and mmseg
builds, the published checkpoints, any input size, gradients against a straightforward
implementation, the shared backbone features, and its detection and segmentation configs."""
import copy
import functools
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmfocal
from mmfocal import FocalFastTransformer, FocalTransformer
from mmfocal.apis import convert_official_checkpoint
from mmfocal.models.backbones import FocalBackbone
from mmfocal.models.checkpoints import CheckpointMismatchError, match_state_dict
from mmfocal.models.layers import FocalFastTransformerBlock, attention_path
from mmfocal.models.layers.attention_kernels import attend
from mmfocal.models.layers.chunking import default_chunk_bytes
from mmfocal.models.layers.fast_key_layout import MIN_SHARED_GROUP, cached_fast_key_layout, unique_pairs

from .helpers import (
    ATTENTION_PATHS,
    CONFIGS,
    TINY,
    assert_block_matches_reference,
    bfloat16_autocast_step,
    norm_parameter_ids,
    shrink_backbone,
    take_attention_path,
    weight_decay_by_parameter,
    with_large_weights,
)
from .naive_focal_fast import naive_fast_block, nearest
from .reference_data import assert_stages_match, load_reference, official_checkpoint_entries

SIZES = {'t': 'tiny', 's': 'small', 'b': 'base'}
V2_FILE = 'focalv2-{}-useconv-is224-ws7.pth'
V2_URL = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/' + V2_FILE
FAST_TINY = dict(TINY, focal_topk=16)  # fewer keys than a 16-token-wide map: the nearest ones matter


def official_state(name):
    """The reference file's weights as an official checkpoint holds them (float32, under 'model')."""
    return {'model': {k: v.float() for k, v in load_reference(name)['state_dict'].items()}}


# ---------------------------------------------------------------------------------------------
# The official numbers


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', ['mini_fast', 'mini_fast_topk64'])
def test_stage_outputs_match_official_model(scope, name, tmp_path):
    ref = load_reference(name)
    args = ref['official_args']
    path = tmp_path / 'official.pth'
    torch.save(official_state(name), path)
    registry = mmfocal.MMDET_MODELS if scope == 'mmdet' else mmfocal.MMSEG_MODELS
    model = registry.build(dict(type='FocalFastTransformer', embed_dims=args['embed_dim'], depths=args['depths'],
                                num_heads=args['num_heads'], focal_levels=args['focal_levels'],
                                focal_topk=args['focal_topK'], drop_path_rate=0.,
                                out_indices=tuple(range(len(args['depths']))),
                                init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    model.eval()
    for case in ref['cases']:
        with torch.no_grad():
            assert_stages_match(model(case['input']), case)


def test_conv_embedding_weights_stay_channels_last_through_loading_and_training(tmp_path):
    # The layout is PatchEmbed's speed decision (a plain weight makes oneDNN reorder the weight
    # gradient at every step); the strict loader must write into the weights, not replace them.
    path = tmp_path / 'official.pth'
    torch.save(official_state('mini_fast'), path)
    args = load_reference('mini_fast')['official_args']
    model = FocalFastTransformer(embed_dims=args['embed_dim'], depths=args['depths'], num_heads=args['num_heads'],
                                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    convs = [model.patch_embed.proj] + [stage.downsample.proj for stage in model.layers if stage.downsample]
    assert len(convs) == 4 and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    assert torch.equal(model.patch_embed.proj.weight, official_state('mini_fast')['model']['patch_embed.proj.weight'])
    sum(out.sum() for out in model(torch.randn(1, 3, 64, 48))).backward()
    assert all(conv.weight.grad.is_contiguous(memory_format=torch.channels_last) for conv in convs)


# ---------------------------------------------------------------------------------------------
# Published checkpoints


def _fake_checkpoint(entry):
    return {k: torch.empty(v['shape'], dtype=getattr(torch, v['dtype']), device='meta')
            for k, v in entry['keys'].items()}


@pytest.mark.parametrize('size', 'tsb')
def test_published_checkpoints_load_strictly_and_parameter_counts(size):
    entry = official_checkpoint_entries(2)[V2_FILE.format(SIZES[size])]
    with torch.device('meta'):
        model = FocalFastTransformer(arch=SIZES[size])
    report = match_state_dict(model, _fake_checkpoint(entry))
    keys = entry['keys']
    params = {k for k, v in keys.items() if v['kind'] == 'parameter'}
    assert params - set(report['loaded']) == {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    buffers = {k for k, v in keys.items() if v['kind'] == 'buffer'}
    assert set(report['dropped']) == buffers | {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    assert {re.sub(r'^.*\.attn\.', '', k) for k in buffers} == {
        'window_coords', 'topk_cloest_indice_0', 'topk_cloest_indice_1', 'topk_cloest_coords_0',
        'topk_cloest_coords_1'}
    assert set(report['initialised']) == {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    head_and_norm = sum(torch.Size(keys[k]['shape']).numel() for k in ('head.weight', 'head.bias', 'norm.weight',
                                                                        'norm.bias'))
    out_norms = sum(2 * model.num_features[i] for i in range(4))
    assert sum(p.numel() for p in model.parameters()) == entry['n_parameters'] - head_and_norm + out_norms


def test_a_checkpoint_of_the_other_model_is_a_clear_error():
    fast = _fake_checkpoint(official_checkpoint_entries(2)[V2_FILE.format('tiny')])
    paper = _fake_checkpoint(official_checkpoint_entries(1)['focal-tiny-useconv-is224-ws7.pth'])
    with torch.device('meta'):
        fast_model = FocalFastTransformer(arch='tiny')
        paper_model = FocalTransformer(arch='tiny', use_conv_embed=True)
    with pytest.raises(CheckpointMismatchError, match=r'Focal Transformer \(paper model\) checkpoint, but the '
                       r'model is a FocalFastTransformer.*use FocalTransformer'):
        match_state_dict(fast_model, paper)
    with pytest.raises(CheckpointMismatchError, match=r'Focal-fast checkpoint, but the model is a '
                       r'FocalTransformer.*use FocalFastTransformer'):
        match_state_dict(paper_model, fast)


def test_convert_tool_writes_a_focal_fast_backbone_file(tmp_path):
    src, dst = tmp_path / 'focalv2-mini.pth', tmp_path / 'converted.pth'
    torch.save(official_state('mini_fast'), src)
    # What tools/convert_official_ckpt.py runs, in this process; the paper model's file, by the tool itself:
    # tests/test_backbone.py.
    assert 'FocalFastTransformer tensors' in convert_official_checkpoint(str(src), str(dst))
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['backbone'] == 'FocalFastTransformer'
    assert 'norm.weight' not in converted['state_dict']
    model = FocalFastTransformer(**converted['meta']['architecture'], init_cfg=dict(type='Pretrained',
                                                                                    checkpoint=str(dst)))
    model.init_weights()
    for key, value in converted['state_dict'].items():
        assert torch.equal(model.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------
# Any input size; gradients against the straightforward implementation


@pytest.mark.parametrize('size', [(1, 1), (5, 3), (17, 23), (31, 500), (64, 64), (97, 33)])
def test_any_input_size_gives_strided_maps(size):
    model = FocalFastTransformer(**FAST_TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    for i, out in enumerate(outs):
        stride = 2**(i + 2)
        assert out.shape == (2, 16 * 2**i, -(-size[0] // stride), -(-size[1] // stride))
        assert torch.isfinite(out).all()


def test_unique_pairs_is_torch_unique_of_rows():
    """The layout's fast unique of (row, col) offsets gives torch.unique(dim=0)'s rows, order and
    inverse, also for negative offsets and a single pair."""
    generator = torch.Generator().manual_seed(0)
    cases = [torch.randint(-40, 40, (n, 2), generator=generator) for n in (1, 7, 2000)]
    cases += [torch.tensor([[3, -2], [3, -2], [-5, 9]]), torch.tensor([[0, 0]])]
    for pairs in cases:
        expected, expected_inverse = torch.unique(pairs, dim=0, return_inverse=True)
        got, inverse = unique_pairs(pairs)
        assert torch.equal(got, expected) and torch.equal(inverse, expected_inverse)


@pytest.mark.parametrize('height,width', [(16, 23), (8, 125), (3, 5), (28, 28)])
def test_neighbour_sets_follow_the_official_rule_on_the_actual_map(height, width):
    """Level-0 keys: the topk tokens of the unpadded map nearest to each window centre (never a
    padded token); level-1 keys: the topk nearest pooled tokens; recorded as the forward used them."""
    w, topk = 7, 30
    layout = cached_fast_key_layout(w, topk, True, height, width, torch.device('cpu'))
    n_wh, n_ww = -(-height // w), -(-width // w)
    hp, wp = n_wh * w, n_ww * w
    index = layout.index.view(n_wh * n_ww, -1)
    k0, k1 = layout.keys_per_level
    assert (k0, k1) == (min(topk, height * width), min(topk, n_wh * n_ww))
    for n in range(n_wh * n_ww):
        i, j = divmod(n, n_ww)
        expected = nearest((i * w + w // 2, j * w + w // 2), height, width, topk)
        map_keys = index[n][index[n] < hp * wp]
        assert sorted((map_keys // wp * width + map_keys % wp).tolist()) == sorted(expected.tolist())
        assert ((map_keys // wp) < height).all() and ((map_keys % wp) < width).all()
        pooled_keys = index[n][index[n] >= hp * wp] - hp * wp
        assert sorted(pooled_keys.tolist()) == sorted(nearest((i, j), n_wh, n_ww, topk).tolist())


def _tiny_block_model(**kwargs):
    torch.manual_seed(0)
    return with_large_weights(FocalFastTransformer(**{**FAST_TINY, **kwargs}))


@pytest.mark.parametrize('kwargs,size', [
    (dict(), (23, 30)),                     # padding at the bottom and right; pooled centre padding
    (dict(), (5, 40)),                      # a map lower than one window
    (dict(focal_topk=128), (16, 16)),       # more keys than the map has: all of them
    (dict(focal_pool='none'), (16, 16)),    # map tokens only
])
@pytest.mark.parametrize('attention_path', ATTENTION_PATHS)
def test_outputs_and_gradients_match_straightforward_implementation(kwargs, size, attention_path, device):
    model = _tiny_block_model(**kwargs).train().double()
    block = model.layers[1].blocks[-1]  # two heads
    x = torch.randn(2, *size, model.num_features[1], requires_grad=True, dtype=torch.float64)
    with take_attention_path(attention_path, block, device):
        assert_block_matches_reference(block, x, naive_fast_block, device=device)


def test_bfloat16_autocast_trains_close_to_float32(device):
    """The bias MLPs run in bfloat16 under autocast; the kernel's backward accumulates in float32."""
    torch.manual_seed(0)
    model = FocalFastTransformer(**FAST_TINY)
    bfloat16_autocast_step(model, device)
    grad = model.layers[0].blocks[0].attn.coord2rpb_all[1][0].weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize('size', [(12, 17), (60, 90), (61, 95)])
@pytest.mark.parametrize('chunk_bytes', [1, 2**15, default_chunk_bytes()])
def test_kernel_takes_a_bias_per_window_as_well_as_table_columns(size, chunk_bytes):
    """The bias forms of the shared kernel agree, forward and gradients, batch 2, in chunks of one
    window, of a few windows and of many: table columns with the window order and groups of windows
    that see the same offsets, the same columns without groups, and one bias per window."""
    torch.manual_seed(0)
    layout = cached_fast_key_layout(7, 20, True, *size, torch.device('cpu'))
    num_windows, keys = layout.off_map.shape
    assert bool(layout.shared_groups) == (size != (12, 17))  # a 2x3 window grid has only border windows
    table = torch.randn(2, 49, int(layout.bias_columns.max()) + 1, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2 * num_windows, 49, 2, 4, dtype=torch.float64, requires_grad=True)
    source = torch.randn(2, int(layout.index.max()) + 1, 2, 2, 4, dtype=torch.float64, requires_grad=True)
    per_window = table[:, :, layout.bias_columns].permute(2, 0, 1, 3)  # (nW, heads, w*w, keys)
    args = (q, source, layout.index)
    no_dropout = torch.nn.Dropout(0.)

    def kernel(path, bias, bias_columns=None):  # the output of the attention path named
        with attention_path(path):
            return attend(*args, bias, layout.off_map, no_dropout, True, bias_columns=bias_columns)[0]

    with attention_path(chunk_bytes=chunk_bytes):
        outs = [kernel('recompute', table, layout.kernel_columns()), kernel('recompute', table, layout.bias_columns),
                kernel('recompute', per_window)]
        with torch.no_grad():
            outs.append(kernel('fused', table, layout.kernel_columns()))
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0])
        grad = torch.randn_like(outs[0])
        expected = torch.autograd.grad(outs[2], (q, source, table), grad)
        for out in outs[:2]:
            for a, b in zip(torch.autograd.grad(out, (q, source, table), grad), expected):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize('size', [(5, 40), (12, 17), (16, 16), (60, 90), (64, 64), (200, 336), (100, 101)])
def test_shared_groups_are_the_windows_with_identical_bias_columns(size):
    layout = cached_fast_key_layout(7, 128, True, *size, torch.device('cpu'))
    columns, order, groups = layout.bias_columns, layout.window_order, layout.shared_groups
    _, group_of, sizes = torch.unique(columns, dim=0, return_inverse=True, return_counts=True)
    large = sizes[group_of] >= MIN_SHARED_GROUP  # windows whose columns at least MIN_SHARED_GROUP windows share
    if not large.any():
        assert order is None and groups == ()
        return
    assert sorted(order.tolist()) == list(range(len(columns)))  # a permutation
    assert [start for start, _ in groups] == [0] + [stop for _, stop in groups[:-1]]  # back to back
    for start, stop in groups:
        windows = order[start:stop]
        assert (columns[windows] == columns[windows[0]]).all()
        assert len(windows) == int(sizes[group_of[windows[0]]])  # the whole group
    assert groups[-1][1] == int(large.sum())  # then the windows of no group
    if size == (200, 336):  # stage 1 of 800x1344: most windows are in groups
        assert groups[-1][1] > len(columns) // 2


def test_bias_tables_kept_without_gradients_follow_the_map_size_and_the_mlp_weights():
    """Inference keeps the bias tables of the last map sizes; a pass at another size, or after a
    write to the bias MLPs that bumps no version counter (``.data``, as mmengine's EMA writes),
    computes what a pass with gradients computes, never a kept table of another size or weight."""
    torch.manual_seed(0)
    block = FocalFastTransformerBlock(32, 4, window_size=7, focal_level=2, topk=16).eval()
    maps = [torch.randn(1, 14, 21, 32), torch.randn(1, 21, 14, 32), torch.randn(1, 28, 20, 32)]  # more sizes than kept

    def without_and_with_gradients(order):
        # One attention path for both passes, so that only the tables can differ: the fused paths
        # run one kernel with gradients and another without where torch < 2.3 lacks the CPU flash one.
        with attention_path('autograd'):
            with torch.no_grad():
                kept = [block(maps[i]) for i in order for _ in range(2)][1::2]
            return kept, [block(maps[i]).detach() for i in order]

    kept, built = without_and_with_gradients([0, 1, 2])
    for ours, expected in zip(kept, built):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    block.attn.coord2rpb_all[1][2].weight.data.add_(1.)  # level 1's output layer
    kept_after, built_after = without_and_with_gradients([2, 1, 0])  # the last two sizes' tables are kept
    for before, ours, expected in zip(kept[::-1], kept_after, built_after):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
        assert not torch.allclose(ours, before)


def test_recorded_attention_is_the_forward_pass():
    model = _tiny_block_model().eval().double()  # float64: the two paths agree to rounding
    attn = model.layers[0].blocks[0].attn
    x = torch.randn(2, 3, 75, 90, dtype=torch.float64)
    with torch.no_grad():
        plain = model(x)
        attn.record_attention = True
        recorded = model(x)
    for a, b in zip(plain, recorded):
        torch.testing.assert_close(a, b)
    rec = attn.recorded
    n_wh, n_ww = rec['windows']
    assert (n_wh, n_ww) == (3, 4) and rec['size'] == (19, 23)  # the stage-1 map of 75x90 is 19x23
    keys = sum(rec['keys_per_level'])
    assert rec['weights'].shape == (2, 12, 1, 49, keys) and rec['index'].shape == (12, keys)
    torch.testing.assert_close(rec['weights'].sum(-1), torch.ones(2, 12, 1, 49, dtype=torch.float64))
    assert rec['index'].max() < 21 * 28 + 12  # the padded map's tokens, then one pooled token per window


# ---------------------------------------------------------------------------------------------
# One backbone code path; arch and init_cfg


def test_both_backbones_share_one_code_path():
    assert issubclass(FocalFastTransformer, FocalBackbone) and issubclass(FocalTransformer, FocalBackbone)
    for name in ('forward', 'train', 'init_weights', '_freeze_stages'):
        assert name not in vars(FocalFastTransformer) and name not in vars(FocalTransformer)
    with torch.device('meta'):
        fast, paper = FocalFastTransformer(arch='tiny'), FocalTransformer(arch='tiny', use_conv_embed=True)
    fast_names = {n for n, _ in fast.named_parameters()}
    paper_names = {n for n, _ in paper.named_parameters()}
    assert {n for n in fast_names ^ paper_names if '.attn.' not in n} == set()


def test_frozen_stages_and_checkpointing():
    torch.manual_seed(0)
    model = FocalFastTransformer(**FAST_TINY, frozen_stages=2).train()
    assert not model.patch_embed.training and not model.layers[1].training and model.layers[2].training
    assert not any(p.requires_grad for p in model.layers[1].parameters())
    with_cp = FocalFastTransformer(**FAST_TINY, frozen_stages=2, with_cp=True).train()
    with_cp.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 72)
    a, b = model(x), with_cp(x)
    sum(o.square().sum() for o in a).backward()
    sum(o.square().sum() for o in b).backward()
    for (name, p), q in zip(model.named_parameters(), with_cp.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('backbone', [FocalTransformer, FocalFastTransformer])
def test_arch_and_explicit_sizes(backbone):
    with pytest.raises(ValueError, match=r"arch='tiny'.*embed_dims=128 \(arch 'tiny' has 96\)"):
        backbone(arch='tiny', embed_dims=128)
    with pytest.raises(ValueError, match=r"depths=\(2, 2, 2, 2\)"):
        backbone(arch='small', depths=[2, 2, 2, 2])
    assert backbone(arch='tiny', embed_dims=96).embed_dims == 96  # agreeing with the arch is fine
    sizes = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])
    from_dict = backbone(arch=sizes)
    assert from_dict.num_features == [16, 32, 64, 128] and len(from_dict.layers[3].blocks) == 1
    with pytest.raises(ValueError, match=r"missing \['num_heads'\]"):
        backbone(arch=dict(embed_dims=16, depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match='arch must be one of'):
        backbone(arch='huge')


def test_init_cfg_list_applies_initialisers_then_the_checkpoint(tmp_path):
    path = tmp_path / 'official.pth'
    torch.save(official_state('mini_fast'), path)
    args = load_reference('mini_fast')['official_args']
    sizes = dict(embed_dims=args['embed_dim'], depths=args['depths'], num_heads=args['num_heads'])
    model = FocalFastTransformer(**sizes, init_cfg=[
        dict(type='Constant', layer='LayerNorm', val=3., bias=0.),
        dict(type='Pretrained', checkpoint=str(path))])
    model.init_weights()
    state = official_state('mini_fast')['model']
    assert torch.equal(model.patch_embed.norm.weight, state['patch_embed.norm.weight'])  # the checkpoint wins
    assert (model.norm0.weight == 3.).all()  # not in the checkpoint: the initialiser's value
    with pytest.raises(ValueError, match='2 Pretrained checkpoints'):
        FocalFastTransformer(**sizes, init_cfg=[dict(type='Pretrained', checkpoint='a'),
                                                dict(type='Pretrained', checkpoint='b')])
    with pytest.raises(TypeError, match='dict with a type'):
        FocalFastTransformer(**sizes, init_cfg=['Pretrained'])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r'Focal-fast has focal_level 1 .* or 2 .*got 3'):
        FocalFastTransformer(**FAST_TINY | dict(focal_levels=(3, 2, 2, 2)))
    with pytest.raises(ValueError, match=r'focal_levels must be non-negative integers, got \(2, -1, 2, 2\)'):
        FocalFastTransformer(**FAST_TINY | dict(focal_levels=(2, -1, 2, 2)))
    with pytest.raises(ValueError, match=r'focal_topk .*must be a positive integer, got 0'):
        FocalFastTransformer(**FAST_TINY | dict(focal_topk=0))
    with pytest.raises(ValueError, match='FocalFastTransformer was built with in_channels=3'):
        FocalFastTransformer(**FAST_TINY)(torch.randn(1, 1, 32, 32))


# ---------------------------------------------------------------------------------------------
# Configs


# What the configs build, in millions: the Focal configs' models with a backbone 1.03M / 0.07M /
# 0.96M larger (T / S / B: the conv embedding, bias MLPs instead of position tables).
DET_PARAMS_M = {'t': 49.73, 's': 71.03, 'b': 110.56}
SEG_PARAMS_M = {'t': 61.87, 's': 83.18, 'b': 124.70}
DROP_PATH = {'det': {'t': 0.2, 's': 0.3, 'b': 0.3}, 'seg': {'t': 0.3, 's': 0.3, 'b': 0.3}}


@functools.lru_cache(maxsize=None)
def _parsed_config(path):
    return Config.fromfile(path)  # resolving mmseg:: bases scans mmseg's model index (seconds)


def load_config(path):
    return copy.deepcopy(_parsed_config(path))


def config_path(task, size):
    if task == 'det':
        return osp.join(CONFIGS, 'det', f'mask_rcnn_focal_fast_{size}_3x.py')
    return osp.join(CONFIGS, 'seg', f'upernet_focal_fast_{size}_512x512_160k_ade20k.py')


def registry_of(task):
    return mmfocal.MMDET_MODELS if task == 'det' else mmfocal.MMSEG_MODELS


@pytest.mark.parametrize('task', ['det', 'seg'])
@pytest.mark.parametrize('size', 'tsb')
def test_config_is_the_focal_config_with_the_fast_backbone(task, size):
    cfg = load_config(config_path(task, size))
    focal = load_config(config_path(task, size).replace('focal_fast_', 'focal_'))
    backbone = cfg.model.backbone
    assert backbone.type == 'FocalFastTransformer' and backbone.arch == SIZES[size]
    assert backbone.drop_path_rate == DROP_PATH[task][size] == focal.model.backbone.drop_path_rate
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=V2_URL.format(SIZES[size]))
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert cfg[key] == focal[key], key
    focal.model.backbone.update(type='FocalFastTransformer', init_cfg=backbone.init_cfg)
    assert cfg.model == focal.model
    with DefaultScope.overwrite_default_scope('mmdet' if task == 'det' else 'mmseg'), torch.device('meta'):
        backbone.init_cfg = None  # the checkpoint cannot be downloaded here
        model = registry_of(task).build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(
        (DET_PARAMS_M if task == 'det' else SEG_PARAMS_M)[size], abs=0.005)


def _tiny_config(task):
    cfg = shrink_backbone(load_config(config_path(task, 't')), dict(focal_topk=16))
    if task == 'det':
        model = cfg.model
        model.train_cfg.rpn_proposal.max_per_img = model.test_cfg.rpn.max_per_img = 50
        model.train_cfg.rcnn.sampler.num = 32
        model.test_cfg.rcnn.update(max_per_img=10, score_thr=0.)
    else:
        cfg.model.data_preprocessor.size = (64, 64)
    return cfg


def _det_batch(sizes):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        generator = torch.Generator().manual_seed(i)
        image = torch.randint(0, 60, (3, h, w), dtype=torch.uint8, generator=generator)
        image[:, h // 4:3 * h // 4, w // 5:w // 2] = 200
        masks = torch.zeros(1, h, w, dtype=torch.uint8)
        masks[:, h // 4:3 * h // 4, w // 5:w // 2] = 1
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[w / 5, h / 4, w / 2, 3 * h / 4]]), labels=torch.tensor([3]),
            masks=BitmapMasks(masks.numpy(), h, w))
        inputs.append(image)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _seg_batch(sizes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        generator = torch.Generator().manual_seed(i)
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator))
        label = torch.zeros(1, h, w, dtype=torch.long)
        label[:, :, w // 3:] = 1 + i
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_one_training_step_and_one_predict_at_test_size(task):
    cfg = _tiny_config(task)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet' if task == 'det' else 'mmseg'):
        model = registry_of(task).build(cfg.model)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        sizes = [(64, 80), (72, 56)]
        # The segmenter trains on 64x64 crops (its preprocessor pads to the crop size) and predicts
        # one whole image at a time.
        batch = _det_batch(sizes) if task == 'det' else _seg_batch([(64, 64), (64, 64)])
        model.train()
        loss, _ = model.parse_losses(model(**model.data_preprocessor(batch, True), mode='loss'))
        assert torch.isfinite(loss) and loss > 0
        optim_wrapper.backward(loss)
        for stage in model.backbone.layers:  # every level's bias MLP got a gradient
            for mlp in stage.blocks[0].attn.coord2rpb_all:
                assert mlp[0].weight.grad is not None and mlp[0].weight.grad.abs().sum() > 0
        before = model.backbone.patch_embed.proj.weight.detach().clone()
        optim_wrapper.step()
        assert not torch.equal(before, model.backbone.patch_embed.proj.weight)
        model.eval()
        with torch.no_grad():
            if task == 'det':
                results = model.test_step(batch)
            else:
                results = [model.test_step(_seg_batch([size]))[0] for size in sizes]
    assert len(results) == 2
    if task == 'det':
        for result in results:
            assert 0 < len(result.pred_instances) <= 10 and torch.isfinite(result.pred_instances.bboxes).all()
    else:
        assert [r.pred_sem_seg.data.shape for r in results] == [(1, 64, 80), (1, 72, 56)]


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_no_decay_on_norms_and_decay_on_the_position_bias_mlps(task):
    cfg = _tiny_config(task)
    with DefaultScope.overwrite_default_scope('mmdet' if task == 'det' else 'mmseg'):
        model = registry_of(task).build(cfg.model)
    decay_of = weight_decay_by_parameter(model, cfg.optim_wrapper)
    base_decay = cfg.optim_wrapper.optimizer.weight_decay
    norms = norm_parameter_ids(model)
    mlps = 0
    for name, param in model.backbone.named_parameters():
        assert decay_of[id(param)] == (0. if id(param) in norms else base_decay), name
        mlps += 'coord2rpb_all' in name
    assert mlps == 4 * 2 * 4  # 4 stages x 2 levels x (2 weights + 2 biases), all decayed
