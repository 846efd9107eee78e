"""The analysis pictures: the focal attention map (weights recorded in the model's own forward pass,
keys where the key layout puts them), learning curves from mmengine's scalars.json, and the
enlarged drawing of small test pictures."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from mmfocal.analysis.focal_keys import focal_fast_query_keys, focal_window_query_keys, query_keys
from mmfocal.analysis.scalars import default_keys, load_history
from mmfocal.models.layers.focal_attention import FocalTransformerBlock
from mmfocal.models.layers.focal_fast_attention import FocalFastTransformerBlock
from mmfocal.visualization.attention_map import draw_attention_map
from mmfocal.visualization.curves import panel_keys, plot_curves

from .helpers import DET_DEMO_CONFIG, SEG_DEMO_CONFIG, TOOLS, run_tool

WINDOW, EXPAND, FOCAL_WINDOW = 7, 3, 7
MAP = (17, 20)  # not a multiple of the window: padded to 21 x 21, 3 x 3 windows


@pytest.fixture(scope='module')
def recorded_block():
    """A focal block (window 7, expand 3, one pooled level) that recorded its attention on a
    17 x 20 map."""
    torch.manual_seed(0)
    block = FocalTransformerBlock(16, 2, window_size=WINDOW, expand_size=EXPAND, focal_window=FOCAL_WINDOW,
                                  focal_level=2).eval()
    block.attn.record_attention = True
    with torch.no_grad():
        block(torch.randn(1, *MAP, 16))
    return block


def expected_layout(row, col, padded=(21, 21)):
    """The keys of query (row, col) by the paper's description, independently of the code: the
    window's tokens; the ring of width e around the window, taken modulo the padded map (the rolls
    wrap); the 7 x 7 window-sized pooled tokens centred on the query window, those beyond the map
    being off it."""
    w, e, (hp, wp) = WINDOW, EXPAND, padded
    top, left = row // w * w, col // w * w
    window = {(top + r, left + c) for r in range(w) for c in range(w)}
    ring = {(top + r, left + c) for r in range(-e, w + e) for c in range(-e, w + e)} - window
    rolled_at = {(r % hp, c % wp) for r, c in ring}
    half = FOCAL_WINDOW // 2
    pooled = {((row // w + dr) * w, (col // w + dc) * w) for dr in range(-half, half + 1)
              for dc in range(-half, half + 1)}
    on_map = {(r, c) for r, c in pooled if 0 <= r < hp and 0 <= c < wp}
    return window, ring, rolled_at, on_map, pooled - on_map


@pytest.mark.parametrize('query', [(10, 10), (0, 10), (0, 0), (16, 19), (20 - 4, 0)],
                         ids=['interior', 'top border', 'corner', 'corner of the padded window', 'left border'])
def test_recorded_weights_and_key_positions_follow_the_layout(recorded_block, query):
    keys = focal_window_query_keys(recorded_block.attn, MAP, *query)
    np.testing.assert_allclose(keys.weights.sum(1), 1.0, atol=1e-5)
    assert keys.weights.shape == (2, 49 + 120 + 49)  # each ring token once (132 rolled slots, 12 repeats)
    names = [g.name for g in keys.groups]
    assert names == ['window tokens', 'rolled neighbours', 'pooled level 1']
    window, ring, rolled_at, on_map, off_map = expected_layout(*query)

    def at(group, **where):
        chosen = keys.group == names.index(group)
        for flag, value in where.items():
            chosen &= getattr(keys, flag) == value
        return {(int(top), int(left)) for top, left in zip(keys.top[chosen], keys.left[chosen])}

    assert at('window tokens') == window
    assert np.all(keys.size[keys.group == 0] == 1)
    rolled = keys.group == names.index('rolled neighbours')
    assert {(int(top), int(left)) for top, left in zip(keys.nominal_top[rolled], keys.nominal_left[rolled])} == ring
    assert at('rolled neighbours') == rolled_at
    wrapped_nominal = {(int(top), int(left)) for top, left in zip(keys.nominal_top[rolled & keys.wrapped],
                                                         keys.nominal_left[rolled & keys.wrapped])}
    assert wrapped_nominal == {(r, c) for r, c in ring if not (0 <= r < 21 and 0 <= c < 21)}
    assert at('pooled level 1', off_map=False) == on_map
    assert at('pooled level 1', off_map=True) == off_map
    assert np.all(keys.size[keys.group == 2] == WINDOW)
    assert keys.weights[:, keys.off_map].max() == 0  # the off-map logit
    np.testing.assert_allclose(keys.mass_per_group().sum(), 1.0, atol=1e-5)


def test_drawn_squares_are_the_layouts(recorded_block, tmp_path):
    """The level panels' drawn squares, in pixels, are the layout's keys (corner query, stride 4)."""
    stride, query = 4, (0, 0)
    keys = focal_window_query_keys(recorded_block.attn, MAP, *query)
    image = np.zeros((MAP[0] * stride, MAP[1] * stride, 3), np.uint8)
    figure = draw_attention_map(keys, image, stride, 'test', out_file=str(tmp_path / 'map.png'))
    window, _, rolled_at, on_map, off_map = expected_layout(*query)
    level_axes = figure.axes[:3]  # the level panels (colour bars come after all panels)

    def drawn(ax, gid):
        return {(round(p.get_y() / stride), round(p.get_x() / stride)) for p in ax.patches if p.get_gid() == gid}

    assert drawn(level_axes[0], 'key:0') == window
    assert drawn(level_axes[1], 'key:1') == rolled_at
    assert drawn(level_axes[2], 'key:2') == on_map
    assert drawn(level_axes[2], 'off_map') == off_map
    assert drawn(level_axes[0], 'query_window') == {(0, 0)}
    assert osp.getsize(tmp_path / 'map.png') > 10000


FAST_TOPK = 20  # map tokens per window; the 3 x 3 pooled windows are all kept


@pytest.fixture(scope='module')
def recorded_fast_block():
    """A Focal-fast block (window 7, 20 nearest tokens, pooled windows) that recorded its attention
    on the same 17 x 20 map."""
    torch.manual_seed(0)
    block = FocalFastTransformerBlock(16, 2, window_size=WINDOW, focal_level=2, topk=FAST_TOPK).eval()
    block.attn.record_attention = True
    with torch.no_grad():
        block(torch.randn(1, *MAP, 16))
    return block


@pytest.mark.parametrize('query', [(10, 10), (0, 0), (16, 19)], ids=['interior', 'corner', 'padded window'])
def test_focal_fast_keys_are_the_nearest_tokens_and_the_pooled_windows(recorded_fast_block, query):
    keys = query_keys(recorded_fast_block.attn, MAP, *query)  # the dispatch by layer type
    assert [g.name for g in keys.groups] == ['nearest map tokens', 'nearest pooled windows']
    np.testing.assert_allclose(keys.weights.sum(1), 1.0, atol=1e-5)
    # Map tokens: FAST_TOPK distinct tokens of the unpadded map, none farther from the window's
    # centre than any token left out (which of equidistant tokens are kept is torch.topk's choice).
    row, col = query
    centre = (row // WINDOW * WINDOW + WINDOW // 2, col // WINDOW * WINDOW + WINDOW // 2)
    fine = keys.group == 0
    chosen = {(int(top), int(left)) for top, left in zip(keys.top[fine], keys.left[fine])}
    assert len(chosen) == fine.sum() == FAST_TOPK and np.all(keys.size[fine] == 1)
    everything = {(r, c) for r in range(MAP[0]) for c in range(MAP[1])}
    assert chosen <= everything

    def distance(token):
        return (token[0] - centre[0])**2 + (token[1] - centre[1])**2

    assert max(map(distance, chosen)) <= min(map(distance, everything - chosen))
    # Pooled windows: the map padded symmetrically to 21 x 21 (2 rows on top, no column on the left)
    pooled = keys.group == 1
    assert {(int(top), int(left)) for top, left in zip(keys.top[pooled], keys.left[pooled])} == \
        {(r * WINDOW - 2, c * WINDOW) for r in range(3) for c in range(3)}
    assert np.all(keys.size[pooled] == WINDOW) and not keys.off_map.any()


def test_focal_fast_attention_map_draws_the_recorded_keys(recorded_fast_block, tmp_path):
    stride, query = 4, (10, 10)
    keys = focal_fast_query_keys(recorded_fast_block.attn, MAP, *query)
    image = np.zeros((MAP[0] * stride, MAP[1] * stride, 3), np.uint8)
    figure = draw_attention_map(keys, image, stride, 'Focal-fast', out_file=str(tmp_path / 'fast.png'))
    for group, ax in enumerate(figure.axes[:2]):
        drawn = {(round(p.get_y() / stride), round(p.get_x() / stride)) for p in ax.patches
                 if p.get_gid() == f'key:{group}'}
        on = keys.group == group
        assert drawn == {(int(top), int(left)) for top, left in zip(keys.top[on], keys.left[on])}
    assert osp.getsize(tmp_path / 'fast.png') > 10000


def run_in_process(script, *args):
    """Run ``tools/<script>`` in this process (no interpreter start-up, no second import of mmdet
    and mmseg); its SystemExit comes back as the exception."""
    import runpy
    import sys
    argv = sys.argv
    sys.argv = [script, *map(str, args)]
    try:
        runpy.run_path(osp.join(TOOLS, script), run_name='__main__')
    finally:
        sys.argv = argv


def test_attention_map_tool_detection(demo_workspace, tmp_path):
    """The whole command, with a checkpoint (the detector's initial weights), in stage 1."""
    from mmfocal.apis import build_model_from_config
    model = build_model_from_config(DET_DEMO_CONFIG)
    checkpoint = tmp_path / 'weights.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    out = tmp_path / 'attention.png'
    _, output = run_tool('analysis/focal_attention_map.py', DET_DEMO_CONFIG, 'data/demo/coco/val/000000.jpg',
                         '--point', '50', '40', '--checkpoint', checkpoint, '--stage', '1', '--out', out,
                         cwd=str(demo_workspace))
    assert out.is_file() and osp.getsize(out) > 20000
    shares = [float(s.split()[-1]) for s in output.split('(mean over heads): ')[1].splitlines()[0].split(', ')]
    assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-3


def test_attention_map_segmentation_random_init(demo_workspace, tmp_path, capsys):
    image = demo_workspace / 'data/demo/ade/images/validation/ADE_val_00000000.jpg'
    out = tmp_path / 'attention.png'
    run_in_process('analysis/focal_attention_map.py', SEG_DEMO_CONFIG, image, '--point', '5', '90', '--out', out)
    assert out.is_file() and osp.getsize(out) > 20000
    assert 'window tokens' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='--stage 4: the backbone has stages 0..3'):
        run_in_process('analysis/focal_attention_map.py', SEG_DEMO_CONFIG, image, '--point', '5', '5',
                       '--stage', '4', '--out', out)
    with pytest.raises(SystemExit, match='--point 5000 5 is outside the'):
        run_in_process('analysis/focal_attention_map.py', SEG_DEMO_CONFIG, image, '--point', '5000', '5',
                       '--out', out)


def write_scalars(run_dir, lines):
    path = osp.join(run_dir, 'vis_data')
    import os
    os.makedirs(path, exist_ok=True)
    with open(osp.join(path, 'scalars.json'), 'w') as file:
        file.writelines(json.dumps(line) + '\n' for line in lines)


def epoch_based_run(work_dir, epochs=3, per_epoch=25, interval=10):
    """scalars.json lines as mmengine's LoggerHook writes them for an epoch-based loop: training
    every ``interval`` iterations within each epoch, validation with step = epoch."""
    lines = []
    for epoch in range(1, epochs + 1):
        for inner in range(interval, per_epoch + 1, interval):
            step = (epoch - 1) * per_epoch + inner
            lines.append(dict(lr=1e-3 / step, data_time=0.01, loss=2.0 / step, loss_cls=1.0 / step, time=0.5,
                              epoch=epoch, iter=step, memory=0, step=step))
        lines.append({'coco/bbox_mAP': 0.1 * epoch, 'coco/bbox_mAP_50': 0.2 * epoch, 'coco/bbox_mAP_l': -1.0,
                      'data_time': 0.01, 'time': 0.2, 'step': epoch})
    write_scalars(osp.join(work_dir, '20260101_000000'), lines)


def test_learning_curves(tmp_path):
    det, seg = tmp_path / 'det', tmp_path / 'seg'
    epoch_based_run(str(det))
    # An iteration-based run (validation step = iteration), resumed: two run folders.
    write_scalars(str(seg / '20260101_000000'), [dict(lr=0.01, loss=1.5, time=0.3, iter=10, step=10),
                                                 dict(lr=0.01, loss=9.0, time=0.3, iter=20, step=20)])
    write_scalars(str(seg / '20260101_010000'), [dict(lr=0.005, loss=1.0, time=0.3, iter=20, step=20),
                                                 dict(mIoU=40.0, aAcc=80.0, time=0.1, step=20)])
    det_history, seg_history = load_history(str(det)), load_history(str(seg))
    assert det_history.iters_per_epoch == 25
    np.testing.assert_array_equal(det_history.val['coco/bbox_mAP'][0], [25, 50, 75])
    assert 'time' not in det_history.train and 'epoch' not in det_history.train
    np.testing.assert_array_equal(seg_history.train['loss'][1], [1.5, 1.0])  # the resumed run replaces step 20
    assert seg_history.val['mIoU'][0].tolist() == [20]
    keys = default_keys([det_history, seg_history])
    assert keys == ['loss', 'lr', 'coco/bbox_mAP', 'coco/bbox_mAP_50', 'mIoU', 'aAcc']
    assert panel_keys(keys) == [['loss'], ['lr'], ['coco/bbox_mAP', 'coco/bbox_mAP_50'], ['mIoU'], ['aAcc']]
    figure = plot_curves([det_history, seg_history], keys)
    loss_axes = figure.axes[0]
    assert len(loss_axes.lines) == 4  # raw and running mean, per run
    assert loss_axes.get_xlabel() == 'iteration'

    out = tmp_path / 'curves.png'
    _, output = run_tool('analysis/plot_curves.py', det, seg, '--keys', 'loss*', 'coco/*', '--out', out)
    assert out.is_file() and osp.getsize(out) > 10000 and str(out) in output
    with pytest.raises(SystemExit, match='--keys nothing: no run logged it'):
        run_in_process('analysis/plot_curves.py', det, '--keys', 'nothing', '--out', out)
    with pytest.raises(SystemExit, match='no such work dir'):
        run_in_process('analysis/plot_curves.py', tmp_path / 'missing')


def test_small_pictures_are_drawn_enlarged(tmp_path):
    """Boxes, masks and label maps scale with the picture, and the visualizers tools/test.py
    --show-dir uses (mmdet's and mmseg's, registered there by mmfocal, writing PNGs) draw the
    enlarged picture."""
    from mmdet.registry import VISUALIZERS as DET_VISUALIZERS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData, PixelData
    from mmseg.registry import VISUALIZERS as SEG_VISUALIZERS
    from mmseg.structures import SegDataSample

    from mmfocal.visualization.enlarge import enlarge_sample, enlargement
    from mmfocal.visualization.prediction_pngs import DetPredictionPNGs, SegPredictionPNGs
    image = np.zeros((100, 128, 3), np.uint8)
    factor = enlargement(image.shape)
    assert factor == 4 and enlargement((640, 480, 3)) == 1
    sample = DetDataSample()
    masks = torch.zeros(1, 100, 128, dtype=torch.bool)
    masks[0, 10:20, 30:50] = True
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[30., 10., 50., 20.]]), labels=torch.tensor([0]),
                                         scores=torch.tensor([0.9]), masks=masks)
    big_image, big = enlarge_sample(image, sample, factor)
    assert big_image.shape == (400, 512, 3)
    assert big.pred_instances.bboxes.tolist() == [[120., 40., 200., 80.]]
    assert big.pred_instances.masks[0].nonzero().min(0).values.tolist() == [40, 120]
    assert sample.pred_instances.bboxes.tolist() == [[30., 10., 50., 20.]]  # the original is left alone

    seg = SegDataSample()
    seg.pred_sem_seg = PixelData(data=torch.arange(6).view(1, 2, 3))
    _, big_seg = enlarge_sample(np.zeros((2, 3, 3), np.uint8), seg, 2)
    assert big_seg.pred_sem_seg.data[0].tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2

    assert DET_VISUALIZERS.get('DetPredictionPNGs') is DetPredictionPNGs
    assert SEG_VISUALIZERS.get('SegPredictionPNGs') is SegPredictionPNGs
    detector = DetPredictionPNGs(name='enlarged_det', show_dir=str(tmp_path))
    detector.dataset_meta = dict(classes=('circle', ), palette=[(220, 20, 60)])
    detector.add_datasample('x', image, data_sample=sample, draw_gt=False, out_file='val/000007.jpg')
    segmenter = SegPredictionPNGs(name='enlarged_seg', show_dir=str(tmp_path))
    segmenter.dataset_meta = dict(classes=tuple('abcdef'), palette=[(i * 40, 0, 0) for i in range(6)])
    seg.pred_sem_seg = PixelData(data=torch.zeros(1, 100, 128, dtype=torch.long))
    segmenter.add_datasample('test_000008.jpg', image, data_sample=seg, draw_gt=False)
    import cv2
    assert cv2.imread(str(tmp_path / '000007.png')).shape == (400, 512, 3)
    assert cv2.imread(str(tmp_path / '000008.png')).shape == (400, 512, 3)
