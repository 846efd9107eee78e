"""Relative-position tables resized on request: a window-7 checkpoint in a window-12 model with
larger focal windows, as dense-prediction fine-tuning starts."""
import logging

import pytest
import torch

from mmfocal import FocalTransformer
from mmfocal.engine.pdparams import load_pdparams
from mmfocal.models.checkpoints import (
    CheckpointMismatchError,
    load_pretrained,
    neighbour_table_geometry,
    resize_grid_table,
    resize_neighbour_table,
    resize_pooling_weight,
    resize_position_tables,
)
from mmfocal.models.layers.key_layout import rolled_neighbour_offsets

from .helpers import TINY
from .reference_data import load_reference, official_kwargs, write_reference_file

# mini_cls's sizes with window 12 and larger focal windows; every position table changes shape.
WINDOW_12 = dict(window_size=12, focal_windows=(9, 7, 5, 3))


@pytest.fixture(scope='module')
def mini_args():
    return official_kwargs(load_reference('mini_cls')['official_args'])


@pytest.fixture
def pdparams(tmp_path):
    """mini_cls.pdparams: PaddleViT's form of a 224, window-7 checkpoint."""
    return write_reference_file('mini_cls.pdparams', tmp_path)


def test_a_table_resized_to_its_own_size_is_unchanged():
    torch.manual_seed(0)
    model = FocalTransformer(**TINY, focal_levels=(3, 3, 3, 3))
    state, resized = resize_position_tables(model, model.state_dict())
    assert resized == [] and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    attn = model.layers[0].blocks[0].attn
    for table in (attn.relative_position_bias_table.t(), *attn.relative_position_bias_table_to_windows):
        side = int(table.shape[1]**0.5)
        assert torch.equal(resize_grid_table(table.detach(), side), table)
    neighbours = attn.relative_position_bias_table_to_neighbors.detach()
    assert neighbour_table_geometry(neighbours.shape) == (7, 3)
    assert torch.equal(resize_neighbour_table(neighbours, 7, 3), neighbours)
    for pool in model.layers[0].blocks[0].pool_layers:  # 7x7 and 3x3 sub-windows
        side = int(pool.weight.shape[1]**0.5)
        assert torch.equal(resize_pooling_weight(pool.weight.detach(), side), pool.weight)


def test_resized_pooling_weights_keep_their_sum():
    mean = torch.full((1, 49), 1 / 49)
    torch.testing.assert_close(resize_pooling_weight(mean, 12), torch.full((1, 144), 1 / 144))
    conv_means = torch.arange(1., 5.).view(4, 1, 1, 1).expand(4, 1, 7, 7) / 49  # depthwise: a mean per channel
    expected = conv_means[..., :1, :1].expand(4, 1, 12, 12) * 49 / 144
    torch.testing.assert_close(resize_pooling_weight(conv_means, 12), expected)


def _roll_and_band_code(window: int, expand: int) -> torch.Tensor:
    """Per rolled key: 4 * roll + (slot row in the band the roll fills from outside the window)
    + 2 * (slot column in it)."""
    rows, cols, dy, dx = rolled_neighbour_offsets(window, expand).t()
    row_band = torch.where(dy > 0, rows >= window - expand, rows < expand)
    col_band = torch.where(dx > 0, cols >= window - expand, cols < expand)
    roll = (dy < 0).long() * 2 + (dx < 0).long()
    return (4 * roll + row_band.long() + 2 * col_band.long()).double()


@pytest.mark.parametrize('window,expand', [(12, 3), (12, 5), (5, 2)])
def test_rolled_keys_stay_with_their_roll_and_band(window, expand):
    """Each roll's keys are resized among themselves, the band of slots filled from outside the
    window apart from the rest: a table constant on each such part stays so, exactly."""
    table = _roll_and_band_code(7, 3).view(1, 1, 1, -1).expand(1, 2, 49, -1)
    resized = resize_neighbour_table(table, window, expand)
    expected = _roll_and_band_code(window, expand).view(1, 1, 1, -1).expand(1, 2, window**2, -1)
    torch.testing.assert_close(resized, expected, atol=1e-12, rtol=0)


def test_without_the_request_other_window_sizes_are_a_mismatch_that_names_the_option(pdparams, mini_args):
    model = FocalTransformer(**dict(mini_args, **WINDOW_12), init_cfg=dict(type='Pretrained', checkpoint=pdparams))
    with pytest.raises(CheckpointMismatchError, match=r'layers\.0\.blocks\.0\.attn\.relative_position_bias_table: '
                       r'checkpoint \(169, 1\) vs model \(529, 1\)[\s\S]*resize_position_tables=True'):
        model.init_weights()


def test_a_window7_checkpoint_loads_resized_and_trains(pdparams, mini_args, caplog):
    checkpoint = load_pdparams(pdparams)['model']
    report_model = FocalTransformer(**dict(mini_args, **WINDOW_12))
    logger = logging.getLogger('test_position_tables')
    with caplog.at_level(logging.INFO, logger=logger.name):
        report = load_pretrained(report_model, pdparams, logger=logger, resize_position_tables=True)
    # Every table and pooling weight of every block, but the neighbour tables of stage 4, which a
    # 224 window-7 checkpoint does not have (one window there: no rolled keys); those are initialised.
    blocks = [f'layers.{i}.blocks.{j}' for i, depth in enumerate(mini_args['depths']) for j in range(depth)]
    expected = [f'{b}.attn.{t}' for b in blocks for t in ('relative_position_bias_table',
                                                          'relative_position_bias_table_to_windows.0')]
    expected += [f'{b}.attn.relative_position_bias_table_to_neighbors' for b in blocks if not b.startswith('layers.3')]
    expected += [f'{b}.pool_layers.0.weight' for b in blocks]  # fc pooling over 12x12 sub-windows, not 7x7
    assert sorted(r.split(':')[0] for r in report['resized']) == sorted(expected)
    assert 'layers.3.blocks.0.attn.relative_position_bias_table_to_neighbors' in report['initialised']
    assert all(key in caplog.text for key in expected) and 'resized position tables' in caplog.text

    # The same through the config, then training on a fixed batch.
    torch.manual_seed(0)
    model = FocalTransformer(**dict(mini_args, **WINDOW_12), init_cfg=dict(type='Pretrained', checkpoint=pdparams,
                                                                     resize_position_tables=True))
    model.init_weights()
    own = model.state_dict()
    assert torch.equal(own['layers.2.blocks.1.attn.qkv.weight'], checkpoint['layers.2.blocks.1.attn.qkv.weight'])
    assert torch.equal(own['layers.0.blocks.0.attn.relative_position_bias_table'],
                       report_model.state_dict()['layers.0.blocks.0.attn.relative_position_bias_table'])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 112, 112)  # stage 1 is 28x28 tokens: several windows of 12, rolled keys used
    targets = [torch.randn_like(out) for out in model(x)]
    losses = []
    for _ in range(4):
        loss = sum((out - target).square().mean() for out, target in zip(model(x), targets))
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    grads = [model.layers[0].blocks[0].attn.relative_position_bias_table_to_neighbors.grad,
             model.layers[0].blocks[0].attn.relative_position_bias_table.grad,
             model.layers[0].blocks[0].attn.relative_position_bias_table_to_windows[0].grad]
    assert all(g.abs().sum() > 0 for g in grads)
