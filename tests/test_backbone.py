"""FocalTransformer: the official model's numbers, any input size, training features, clear errors."""
import os
import re

import pytest
import torch

import mmfocal
from mmfocal import FocalFastTransformer, FocalTransformer
from mmfocal.apis import match_official_backbone
from mmfocal.errors import BadArgumentError
from mmfocal.models.checkpoints import (
    CheckpointMismatchError,
    convert_official_classifier,
    infer_architecture,
    match_state_dict,
)
from mmfocal.models.layers import FocalTransformerBlock
from mmfocal.models.layers.key_layout import (
    OFF_MAP_LOGIT,
    compute_key_layout,
    distinct_rolled_keys,
    merge_repeated_slots,
    rolled_neighbour_offsets,
)
from mmfocal.models.layers.plain_paths import attend_with_autograd
from mmfocal.models.layers.recompute_path import FocalAttentionCore

from .helpers import (
    ATTENTION_PATHS,
    TINY,
    assert_block_matches_reference,
    bfloat16_autocast_step,
    run_tool,
    take_attention_path,
    with_large_weights,
)
from .naive_focal import naive_block
from .reference_data import assert_stages_match, load_reference, official_checkpoint_entries, official_kwargs


def build(scope, **kwargs):
    registry = mmfocal.MMDET_MODELS if scope == 'mmdet' else mmfocal.MMSEG_MODELS
    return registry.build(dict(type='FocalTransformer', **kwargs))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', ['mini_fc', 'mini_fc_useconv'])
def test_stage_outputs_match_official_model(scope, name):
    ref = load_reference(name)
    model = build(scope, **official_kwargs(ref['official_args'])).eval()
    state = {k: v.float() for k, v in ref['state_dict'].items()}
    report = match_state_dict(model, state)
    # The 3-stage files leave out the final norm with stage 4 (tests/data/README.md).
    assert sorted(report['dropped']) == (['norm.bias', 'norm.weight'] if len(model.layers) == 4 else [])
    model.load_state_dict({k: state[k] for k in report['loaded']}, strict=False)
    for case in ref['cases']:
        with torch.no_grad():
            outs = model(case['input'])
        assert len(outs) == len(model.layers)
        assert_stages_match(outs, case)


def _tiny_block_model(**kwargs):
    torch.manual_seed(0)
    return with_large_weights(FocalTransformer(**{**TINY, **kwargs}))


@pytest.mark.parametrize('kwargs,size', [
    (dict(), (23, 30)),                                        # rolled keys, padding, border masks
    (dict(), (7, 19)),                                         # one window high: no rolled keys
    (dict(focal_pool='conv'), (16, 16)),
    (dict(focal_pool='mean'), (16, 16)),
    (dict(focal_pool='max'), (16, 16)),
    (dict(focal_pool='none'), (16, 16)),
    (dict(focal_levels=(3, 3, 3, 3)), (22, 29)),               # a second pooled level (stride 2)
    (dict(expand_layer='even', depths=(2, 1, 1, 1)), (16, 16)),
])
@pytest.mark.parametrize('attention_path', ATTENTION_PATHS)
def test_outputs_and_gradients_match_straightforward_implementation(kwargs, size, attention_path, device):
    model = _tiny_block_model(**kwargs).train().double()
    block = model.layers[0].blocks[-1]
    x = torch.randn(2, *size, model.num_features[0], requires_grad=True, dtype=torch.float64)
    with take_attention_path(attention_path, block, device):
        assert_block_matches_reference(block, x, naive_block, allow_unused=True, device=device)


@pytest.mark.parametrize('size', [(1, 1), (17, 23), (31, 500), (20, 90), (64, 64), (97, 33)])
def test_any_input_size_gives_strided_maps(size):
    model = FocalTransformer(**TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    for i, out in enumerate(outs):
        stride = 2**(i + 2)
        assert out.shape == (1, 16 * 2**i, -(-size[0] // stride), -(-size[1] // stride))
        assert torch.isfinite(out).all()


def test_out_indices_and_output_norms():
    model = FocalTransformer(**TINY, out_indices=(1, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 128]
    assert not hasattr(model, 'norm0') and not hasattr(model, 'norm2')
    for i in (1, 3):
        norm = getattr(model, f'norm{i}')
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def _official_entries(file_name):
    return official_checkpoint_entries(1)[file_name]


def _expected_backbone_params(entry):
    """Official count without head and final norm, plus stage-4 neighbour tables and output norms."""
    keys, args = entry['keys'], entry['constructor']
    head = sum(_numel(keys[k]['shape']) for k in keys if re.match(r'^(head|norm)\.', k))
    last = len(args['depths']) - 1
    heads, window = args['num_heads'][last], args['window_size']
    neighbour_tables = args['depths'][last] * heads * window**2 * 4 * (window**2 - (window - 3)**2)
    out_norms = sum(2 * args['embed_dim'] * 2**i for i in range(4))
    return entry['n_parameters'] - head + neighbour_tables + out_norms


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


ARCH_OF = {'tiny': 'focal-tiny', 'small': 'focal-small', 'base': 'focal-base'}
OFFICIAL_FILES = [f'{prefix}{conv}-is224-ws7.pth' for prefix in ARCH_OF.values() for conv in ('', '-useconv')]


def _arch_for(file_name):
    return next(a for a, p in ARCH_OF.items() if file_name.startswith(p + '-'))


def test_tiny_has_28_42m_parameters():
    model = FocalTransformer(arch='tiny')
    assert sum(p.numel() for p in model.parameters()) == 28_423_188


@pytest.mark.parametrize('file_name', OFFICIAL_FILES)
def test_parameter_counts_and_published_keys_fit(file_name):
    entry = _official_entries(file_name)
    with torch.device('meta'):
        model = FocalTransformer(arch=_arch_for(file_name), use_conv_embed=entry['constructor']['use_conv_embed'])
    assert sum(p.numel() for p in model.parameters()) == _expected_backbone_params(entry)
    state = {k: torch.empty(v['shape'], device='meta') for k, v in entry['keys'].items()}
    report = match_state_dict(model, state)
    official_params = {k for k, v in entry['keys'].items() if v['kind'] == 'parameter'}
    assert official_params - set(report['loaded']) == {'head.weight', 'head.bias', 'norm.weight', 'norm.bias'}
    assert all(entry['keys'][k]['kind'] == 'buffer' for k in report['dropped'] if not re.match(r'^(head|norm)\.', k))
    last = len(entry['constructor']['depths']) - 1
    expected_init = {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    expected_init |= {f'layers.{last}.blocks.{j}.attn.relative_position_bias_table_to_neighbors'
                      for j in range(entry['constructor']['depths'][last])}
    assert set(report['initialised']) == expected_init


def _fake_checkpoint(entry, seed=0):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, info in entry['keys'].items():
        if info['dtype'] == 'int64':
            state[key] = torch.zeros(info['shape'], dtype=torch.int64)
        else:
            state[key] = torch.randn(info['shape'], generator=generator)
    return {'model': state}


def test_init_cfg_loads_official_checkpoint_file_and_reports(tmp_path):
    from mmengine.logging import MMLogger
    entry = _official_entries('focal-tiny-is224-ws7.pth')
    path = tmp_path / 'focal-tiny-is224-ws7.pth'
    checkpoint = _fake_checkpoint(entry)
    torch.save(checkpoint, path)
    model = build('mmdet', arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    logger = MMLogger.get_current_instance()
    messages = []
    handler = _ListHandler(messages)
    logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    own = model.state_dict()
    for key, value in checkpoint['model'].items():
        if key in own:
            assert torch.equal(own[key], value), key
    text = '\n'.join(messages)
    assert 'head.weight' in text and 'not used' in text
    assert 'layers.3.blocks.0.attn.relative_position_bias_table_to_neighbors' in text and 'initialised' in text
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 128))
    assert all(torch.isfinite(o).all() for o in outs)


class _ListHandler(__import__('logging').Handler):

    def __init__(self, messages):
        super().__init__()
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_checkpoint_of_another_size_is_a_clear_error(tmp_path):
    entry = _official_entries('focal-base-is224-ws7.pth')
    state = {k: torch.empty(v['shape'], device='meta') for k, v in entry['keys'].items()}
    with torch.device('meta'):
        tiny = FocalTransformer(arch='tiny')
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatches[\s\S]*patch_embed\.proj\.weight: '
                       r'checkpoint \(128, 3, 4, 4\) vs model \(96, 3, 4, 4\)'):
        match_state_dict(tiny, state)
    small_state = {k: torch.empty(v['shape'], device='meta')
                   for k, v in _official_entries('focal-small-is224-ws7.pth')['keys'].items()}
    with pytest.raises(CheckpointMismatchError, match=r'checkpoint keys the model does not have: layers\.2\.blocks\.6'):
        match_state_dict(tiny, small_state)


@pytest.mark.parametrize('backbone,damage,message', [
    (FocalTransformer, lambda state: state.pop('patch_embed.proj.weight'), 'no patch_embed.proj.weight'),
    (FocalTransformer, lambda state: state.update({'patch_embed.proj.weight': torch.tensor(1.)}),
     r'patch_embed\.proj\.weight should be a 4-D tensor, got \(\)'),
    (FocalTransformer, lambda state: state.pop('layers.1.blocks.0.attn.relative_position_bias_table'),
     r'no layers\.1\.blocks\.0\.attn\.relative_position_bias_table'),
    (FocalTransformer, lambda state: [state.pop(k) for k in list(state) if k.startswith('layers.2.blocks.')],
     r'stage 2 has no blocks \(layers\.2\.\* keys, but no layers\.2\.blocks\.<n>\.\*\)'),
    (FocalFastTransformer, lambda state: state.pop('layers.0.blocks.0.attn.coord2rpb_all.0.2.weight'),
     r'no layers\.0\.blocks\.0\.attn\.coord2rpb_all\.0\.2\.weight'),
])
def test_architecture_of_a_checkpoint_lacking_a_tensor_it_is_read_from_is_named(backbone, damage, message):
    state = _tiny(backbone).state_dict()
    assert infer_architecture(state)['depths'] == (1, 1, 1, 1)
    damage(state)
    for read in (infer_architecture, match_official_backbone):  # the latter: both converters' check
        with pytest.raises(CheckpointMismatchError, match=message) as error:
            read(state)
        assert '\n' not in str(error.value)


def test_non_finite_weights_are_a_warning_naming_them(tmp_path):
    from mmengine.logging import MMLogger
    state = FocalTransformer(**TINY).state_dict()
    state['layers.0.blocks.0.mlp.fc1.weight'][0, 0] = float('nan')
    state['layers.2.blocks.0.attn.qkv.bias'][1] = float('-inf')
    bad = ['layers.0.blocks.0.mlp.fc1.weight', 'layers.2.blocks.0.attn.qkv.bias']
    path = tmp_path / 'diverged.pth'
    torch.save(dict(state_dict=state), path)
    official = {k: v for k, v in state.items() if not k.startswith('norm')}  # the classifier's norm and head:
    official.update({'head.weight': torch.zeros(10, 128), 'head.bias': torch.zeros(10),
                     'norm.weight': torch.ones(128), 'norm.bias': torch.full((128, ), float('nan'))})
    messages = []
    handler = _ListHandler(messages)
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        # init_cfg (the weights load: a warning, not an error), both converters' check, --classifier's conversion
        FocalTransformer(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
        match_official_backbone(state, str(path))
        convert_official_classifier(dict(model=official))
    finally:
        logger.removeHandler(handler)
    warnings = [m for m in messages if 'NaN or infinite' in m]
    assert len(warnings) == 3, messages
    assert all('NaN or infinite values in 2 of its tensors' in m and all(k in m for k in bad) for m in warnings[:2])
    assert all(str(path) in m for m in warnings[:2])
    assert 'in 3 of its tensors' in warnings[2] and 'backbone.norm3.bias' in warnings[2]


def test_convert_tool_writes_loadable_backbone_file(tmp_path):
    entry = _official_entries('focal-tiny-useconv-is224-ws7.pth')
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    official = _fake_checkpoint(entry, seed=1)
    official['model']['layers.1.blocks.0.mlp.fc2.bias'][0] = float('nan')  # converted, with a warning naming it
    torch.save(official, src)
    _, output = run_tool('convert_official_ckpt.py', src, dst, cwd=tmp_path)  # from any working directory
    assert 'use_conv_embed' in output
    assert 'NaN or infinite values in 1 of its tensors' in output and 'layers.1.blocks.0.mlp.fc2.bias' in output
    converted = torch.load(dst)['state_dict']
    assert 'head.weight' not in converted and 'layers.0.blocks.0.attn.relative_position_index' not in converted
    model = FocalTransformer(arch='tiny', use_conv_embed=True,
                             init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    torch.testing.assert_close(model.patch_embed.proj.weight, converted['patch_embed.proj.weight'])


def test_frozen_stages_stay_frozen_in_train_mode():
    model = FocalTransformer(**TINY, frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.norm0, model.norm1]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert model.layers[2].training and all(p.requires_grad for p in model.layers[2].parameters())
    model(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    assert model.layers[0].blocks[0].attn.qkv.weight.grad is None
    assert model.layers[2].blocks[0].attn.qkv.weight.grad is not None


def test_checkpointing_gives_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = FocalTransformer(**TINY)
    checkpointed = FocalTransformer(**TINY, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 48, 72)
    outs = [m(x) for m in (plain, checkpointed)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    for m, o in zip((plain, checkpointed), outs):
        sum(t.square().sum() for t in o).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f'{name}: {m}')


def test_drop_path_follows_linear_rule_over_all_blocks():
    model = FocalTransformer(depths=(2, 2, 6, 2), drop_path_rate=0.3, embed_dims=16, num_heads=(1, 1, 1, 1))
    rates = [block.drop_path.p for stage in model.layers for block in stage.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 12))


@pytest.mark.parametrize('kwargs,message', [
    (dict(depths=(2, 2, 6), num_heads=(3, 6, 12, 24)), 'one entry per stage'),
    (dict(focal_windows=(7, 5, 3)), 'focal_windows'),
    (dict(expand_sizes=(3, 3)), 'expand_sizes'),
    (dict(focal_levels=(2, 2, 2)), 'focal_levels'),
    (dict(embed_dims=100), 'not divisible by num_heads'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(arch='huge'), 'arch'),
    (dict(focal_pool='avg'), 'focal_pool'),
    (dict(expand_layer='some'), 'expand_layer'),
    (dict(focal_windows=(7, 4, 3, 1)), 'odd'),
    (dict(focal_levels=(2, 0, 2, 2)), 'focal_level counts the fine level'),
    (dict(expand_sizes=(3, 7, 3, 3)), r'expand_size must be in 0\.\.window_size - 1 = 6, got 7'),
    (dict(window_size=0), 'window_size must be a positive integer'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FocalTransformer(**kwargs)


def test_bad_inputs_are_named():
    model = FocalTransformer(**TINY)
    with pytest.raises(ValueError, match='4-D'):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='in_channels=3.*1 channels'):
        model(torch.randn(1, 1, 32, 32))
    gray = FocalTransformer(**TINY, in_channels=1)
    assert gray(torch.randn(1, 1, 32, 32))[0].shape == (1, 16, 8, 8)


def _tiny(backbone, **kwargs):
    return backbone(**dict(TINY, **(dict(focal_topk=16) if backbone is FocalFastTransformer else {}), **kwargs))


@pytest.mark.parametrize('backbone', [FocalTransformer, FocalFastTransformer])
@pytest.mark.parametrize('kwargs,message', [
    (dict(mlp_ratio=0), 'mlp_ratio must be positive'),
    (dict(mlp_ratio=-2.), 'mlp_ratio must be positive'),
    (dict(drop_path_rate=1.), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=float('nan')), r'drop_path_rate must be in \[0, 1\)'),
])
def test_rates_out_of_range_are_refused_at_construction(backbone, kwargs, message):
    with pytest.raises(BadArgumentError, match=message) as error:
        _tiny(backbone, **kwargs)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('backbone', [FocalTransformer, FocalFastTransformer])
def test_a_batch_of_no_images_gives_empty_maps_of_the_right_shape(backbone):
    """As mmdet's convolutional backbones do (torch's layers take an empty batch); mmdet's Swin
    fails on one with a RuntimeError from its window reshape."""
    model = _tiny(backbone, use_conv_embed=True).train()
    one = model(torch.randn(1, 3, 61, 97))
    empty = torch.randn(0, 3, 61, 97, requires_grad=True)
    outs = model(empty)
    assert [tuple(o.shape) for o in outs] == [(0, ) + tuple(o.shape[1:]) for o in one]
    sum(o.sum() for o in outs).backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize('backbone', [FocalTransformer, FocalFastTransformer])
def test_non_float_input_is_named(backbone):
    model = _tiny(backbone)
    for dtype in (torch.uint8, torch.int64, torch.bool):
        with pytest.raises(BadArgumentError, match=f'floating-point images, got {dtype}') as error:
            model(torch.zeros(1, 3, 32, 32, dtype=dtype))
        assert '\n' not in str(error.value)


def test_bfloat16_autocast_trains_close_to_float32(device):
    torch.manual_seed(0)
    model = FocalTransformer(**TINY)
    bfloat16_autocast_step(model, device)
    qkv_grad = model.layers[0].blocks[0].attn.qkv.weight.grad
    table_grad = model.layers[0].blocks[0].attn.relative_position_bias_table_to_windows[0].grad
    assert torch.isfinite(qkv_grad).all() and qkv_grad.abs().sum() > 0
    assert table_grad.dtype == torch.float32 and table_grad.abs().sum() > 0


def test_rolled_slots_reaching_one_token_are_one_key_with_their_biases_merged():
    """The official rolls fill 132 slots around a 7x7 window (e=3) with the 120 tokens of the
    ring, 12 of them twice (each slot with its own bias). The layout fetches each token once, with
    bias log(exp(b1) + exp(b2)): the same softmax (the reference comparisons above check outputs
    and gradients against the official 132 slots)."""
    slots = distinct_rolled_keys(7, 3)
    repeated = slots[slots[:, 1] >= 0]
    assert slots.shape == (120, 2) and len(repeated) == 12
    offsets = rolled_neighbour_offsets(7, 3)
    reach = offsets[:, :2] + offsets[:, 2:]  # where each slot's token lies, relative to the window
    assert torch.equal(reach[repeated[:, 0]], reach[repeated[:, 1]])
    assert len({tuple(r) for r in reach[slots[:, 0]].tolist()}) == 120
    assert sorted(slots[slots >= 0].tolist()) == list(range(132))

    bias = torch.randn(3, 49, 132, dtype=torch.float64, requires_grad=True)
    merged = merge_repeated_slots(bias, slots)
    expected = bias[..., slots[:, 0]].clone()
    expected[..., slots[:, 1] >= 0] = torch.logaddexp(bias[..., repeated[:, 0]], bias[..., repeated[:, 1]])
    torch.testing.assert_close(merged, expected)
    grad = torch.randn(merged.shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(merged, bias, grad)[0], torch.autograd.grad(expected, bias, grad)[0])

    # the middle window of a 7x7 grid reads 49 + 120 distinct map tokens, then its 49 pooled ones
    index, off_map = compute_key_layout(7, 3, 7, 1, 7, 7, True, torch.device('cpu'))
    keys = index.view(49, -1)[24]
    assert len(keys) == 49 + 120 + 49 and len(set(keys[:169].tolist())) == 169
    assert not off_map[24].any()
    assert distinct_rolled_keys(7, 4).shape == (160, 1)  # e = 4: no slot repeats a token


@pytest.mark.parametrize('table', ['relative_position_bias_table', 'relative_position_bias_table_to_neighbors',
                                   'relative_position_bias_table_to_windows.0'])
def test_position_bias_is_kept_without_gradients_only_while_its_tables_hold_their_values(table):
    """Inference keeps the biases built from the tables between passes; a write to a table that
    bumps no version counter (through ``.data``, as mmengine's EMA does) must still be seen."""
    torch.manual_seed(0)
    block = FocalTransformerBlock(32, 4, window_size=7, expand_size=3, focal_window=7, focal_level=2).eval()
    attn = block.attn
    x = torch.randn(1, 14, 21, 32)
    with torch.no_grad():
        before = block(x)
        kept = attn.position_bias(True)
        assert attn.position_bias(True) is kept and torch.equal(kept, attn.build_position_bias(True))
        attn.get_parameter(table).data.add_(torch.randn_like(attn.get_parameter(table)))
        rebuilt = attn.position_bias(True)
        after = block(x)
    assert rebuilt is not kept and torch.equal(rebuilt, attn.build_position_bias(True))
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, block(x))  # with gradients: built in the graph every pass
    with_gradients = attn.position_bias(True)
    assert with_gradients.requires_grad and with_gradients is not attn.position_bias(True)


@pytest.mark.parametrize('attention_path', ['cpu', 'other devices'])
def test_bfloat16_kernel_gradients_are_those_of_the_rounded_inputs(attention_path, device):
    """The recomputing kernel on bfloat16 queries and keys, with forward and backward() both inside
    autocast: its output and gradients are within 1.5% (of each tensor's largest value) of the
    exact ones of the same rounded inputs. A bfloat16 log-sum-exp gave 2-4%, scores rounded to
    bfloat16 before the softmax (the path of other devices) 9-15%, and backward() inside autocast
    stopped with a dtype error."""
    generator = torch.Generator().manual_seed(0)
    windows, keys, heads, head_dims, batch, source_size = 6, 60, 2, 16, 2, 200
    index = torch.randint(0, source_size, (windows * keys, ), generator=generator)
    off_map = torch.zeros(windows, keys)
    off_map[0, :7] = OFF_MAP_LOGIT
    bias = torch.randn(heads, 49, keys, generator=generator)
    q = (1.5 * torch.randn(batch * windows, 49, heads, head_dims, generator=generator)).bfloat16()
    source = (1.5 * torch.randn(batch, source_size, 2, heads, head_dims, generator=generator)).bfloat16()
    grad_out = torch.randn(q.shape, generator=generator)

    exact = [t.double().requires_grad_() for t in (q, source, bias)]
    expected_out = attend_with_autograd(exact[0], exact[1], index, exact[2], off_map.double(), torch.nn.Identity())
    expected = [expected_out] + list(torch.autograd.grad(expected_out, exact, grad_out.double()))

    ours = [t.to(device).requires_grad_() for t in (q, source, bias)]
    with take_attention_path(attention_path, None, device), torch.autocast(device.type, dtype=torch.bfloat16):
        out = FocalAttentionCore.apply(ours[0], ours[1], index.to(device), ours[2], off_map.to(device))
        got = [out] + list(torch.autograd.grad(out, ours, grad_out.to(device, out.dtype)))
    for name, g, e in zip(('output', 'q', 'source', 'bias'), got, expected):
        error = (g.detach().double().cpu() - e.detach()).abs().max() / e.detach().abs().max()
        assert error < 0.015, (name, float(error))


def test_official_training_checkpoint_with_its_yacs_config_loads(tmp_path):
    """The authors' training script saves optimizer, scheduler and its yacs config beside `model`."""
    import subprocess
    import sys
    yacs = tmp_path / 'fake_site' / 'yacs'
    yacs.mkdir(parents=True)
    (yacs / '__init__.py').write_text('')
    (yacs / 'config.py').write_text(
        'class CfgNode(dict):\n'
        '    def __init__(self, d=None):\n'
        '        for k, v in (d or {}).items():\n'
        '            self[k] = CfgNode(v) if isinstance(v, dict) else v\n'
        '        self.__dict__["__immutable__"] = False\n')
    entry = _official_entries('focal-tiny-is224-ws7.pth')
    weights = tmp_path / 'weights.pth'
    torch.save(_fake_checkpoint(entry), weights)
    path = tmp_path / 'focal-tiny-is224-ws7.pth'
    script = (
        'import sys, torch\n'
        'from yacs.config import CfgNode\n'
        f'ck = torch.load({str(weights)!r})\n'
        'ck.update(optimizer={"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},\n'
        '          lr_scheduler={"t_initial": 300, "base_values": [1e-3]}, max_accuracy=82.2, epoch=299,\n'
        '          config=CfgNode({"MODEL": {"TYPE": "focal", "DROP_PATH_RATE": 0.2}, "AMP_OPT_LEVEL": "O1"}))\n'
        f'torch.save(ck, {str(path)!r})\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'fake_site'))
    subprocess.run([sys.executable, '-c', script], check=True, env=env)
    model = FocalTransformer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    expected = torch.load(weights)['model']['layers.2.blocks.5.mlp.fc2.weight']
    assert torch.equal(model.layers[2].blocks[5].mlp.fc2.weight.detach(), expected)


def test_attention_dropout_path_matches_in_eval_and_trains():
    """attn_drop_rate > 0 takes the plain autograd path in training; eval is the fused path."""
    torch.manual_seed(0)
    plain = FocalTransformer(**TINY)
    dropping = FocalTransformer(**TINY, attn_drop_rate=0.3)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        for a, b in zip(plain.eval()(x), dropping.eval()(x)):
            torch.testing.assert_close(a, b)
    dropping.train()
    torch.manual_seed(1)
    outs = dropping(x)
    torch.manual_seed(2)
    assert not torch.equal(outs[0], dropping(x)[0])  # dropout acts (its math: the test above)
    sum(o.square().mean() for o in outs).backward()
    grad = dropping.layers[0].blocks[0].attn.relative_position_bias_table_to_neighbors.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
