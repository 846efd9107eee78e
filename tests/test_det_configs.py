"""The COCO detection configs: they inherit mmdet's own configs, build the paper's model sizes,
give no weight decay to position tables and norms, and train and predict with real mmdet models
on CPU. Anything made smaller for speed is named where it is changed (a one-block, 32-channel
backbone; 1/8 of every image scale); the rest is the config as users run it."""
import ast
import copy
import os
import os.path as osp
import random
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmcv.transforms import Compose
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from PIL import Image

import mmfocal  # noqa: F401  registers FocalTransformer

from .helpers import DET_CONFIGS as CONFIG_DIR
from .helpers import shrink_backbone, shrink_scales

CHECKPOINT_URL = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/imagenet1k/focal-{}-is224-ws7.pth'

ARCH = {'t': 'tiny', 's': 'small', 'b': 'base'}
DROP_PATH = {'t': 0.2, 's': 0.3, 'b': 0.3}
EMBED_DIMS = {'t': 96, 's': 96, 'b': 128}
# The paper's parameter counts (millions); configs must be within 2%.
PAPER_PARAMS = {
    ('mask_rcnn', 't'): 49, ('mask_rcnn', 's'): 71, ('mask_rcnn', 'b'): 110,
    ('retinanet', 't'): 39, ('retinanet', 's'): 62, ('retinanet', 'b'): 101,
    ('cascade_mask_rcnn', 't'): 87, ('atss', 't'): 37, ('sparse_rcnn', 't'): 111,
}  # and RepPointsV2 T 45M, which the authors' published head cannot reach (40.11M, docs/det_results.md)
# What every config builds (docs/det_results.md), in millions; the paper has no S/B size for
# Cascade Mask R-CNN, ATSS and Sparse R-CNN.
OUR_PARAMS_M = {
    ('mask_rcnn', 't'): 48.70, ('mask_rcnn', 's'): 70.96, ('mask_rcnn', 'b'): 109.60,
    ('retinanet', 't'): 39.36, ('retinanet', 's'): 61.62, ('retinanet', 'b'): 100.85,
    ('cascade_mask_rcnn', 't'): 86.53, ('cascade_mask_rcnn', 's'): 108.79, ('cascade_mask_rcnn', 'b'): 147.44,
    ('atss', 't'): 36.64, ('atss', 's'): 58.90, ('atss', 'b'): 97.53,
    ('reppoints_v2', 't'): 40.11, ('reppoints_v2', 's'): 62.37, ('reppoints_v2', 'b'): 101.60,
    ('sparse_rcnn', 't'): 110.64, ('sparse_rcnn', 's'): 132.91, ('sparse_rcnn', 'b'): 171.55,
}
SCHEDULES = {
    'mask_rcnn': ('1x', '3x'), 'retinanet': ('1x', '3x'), 'cascade_mask_rcnn': ('3x', ),
    'atss': ('3x', ), 'sparse_rcnn': ('3x', ), 'reppoints_v2': ('3x', ),
}
CONFIGS = [f'{det}_focal_{size}_{sched}' for det, scheds in SCHEDULES.items() for size in 'tsb' for sched in scheds]
# The file names of the paper's five detector families with Focal-T/S/B; configs of other
# backbones or detectors in configs/det/ have tests of their own.
PAPER_FAMILY_FILE = re.compile(rf"^({'|'.join(SCHEDULES)})_focal_[tsb]_\d+x\.py$")
STAGES_2_TO_4 = ('retinanet', 'atss', 'reppoints_v2')  # detectors fed by backbone stages 1-3 (0-based)
MASK_DETECTORS = ('mask_rcnn', 'cascade_mask_rcnn')
# One config per detector type for the training step and prediction.
DETECTOR_CONFIGS = ['mask_rcnn_focal_t_1x', 'retinanet_focal_t_3x', 'cascade_mask_rcnn_focal_t_3x',
                    'atss_focal_t_3x', 'sparse_rcnn_focal_t_3x']


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def detector_of(name):
    return re.match(r'(.+)_focal_[tsb]_\dx$', name).group(1)


def load_config(name):
    return Config.fromfile(osp.join(CONFIG_DIR, f'{name}.py'))


def fewer_rois(cfg):
    """Fewer proposals, sampled RoIs and kept detections than the config's (2000 / 1000
    proposals, 512 RoIs, 100 detections; Sparse R-CNN's 300 queries), for CPU speed."""
    model = cfg.model
    if model.type == 'SparseRCNN':
        model.rpn_head.num_proposals = model.test_cfg.rcnn.max_per_img = 20
    elif 'roi_head' in model:
        model.train_cfg.rpn_proposal.max_per_img = model.test_cfg.rpn.max_per_img = 100
        for stage in model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn]:
            stage.sampler.num = 32
        model.test_cfg.rcnn.max_per_img = 20
    return cfg


def build_model(cfg):
    """The model as mmengine's Runner prepares it for a non-distributed run: SyncBN (the cascade
    heads') reverted to BN, and every module's own initialisation applied."""
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return model


def reaches_mmdet(path):
    """Whether the `_base_` chain of a config file reaches an `mmdet::` config."""
    tree = ast.parse(open(path).read())
    bases = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == '_base_')
    for base in [bases] if isinstance(bases, str) else bases:
        if base.startswith('mmdet::') or reaches_mmdet(osp.join(osp.dirname(path), base)):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# The files and their settings


def test_every_paper_detector_has_its_config():
    names = sorted(osp.splitext(f)[0] for f in os.listdir(CONFIG_DIR) if PAPER_FAMILY_FILE.match(f))
    assert names == sorted(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_inherits_mmdet_and_sets_the_paper_backbone(name):
    det, size = detector_of(name), name.split('_')[-2]
    assert reaches_mmdet(osp.join(CONFIG_DIR, f'{name}.py'))
    cfg = load_config(name)
    assert 'mmfocal' in cfg.custom_imports.imports and not cfg.custom_imports.allow_failed_imports
    backbone = cfg.model.backbone
    assert backbone.type == 'FocalTransformer' and backbone.arch == ARCH[size]
    assert backbone.drop_path_rate == DROP_PATH[size]
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=CHECKPOINT_URL.format(ARCH[size]))
    assert not any(key in backbone for key in ('depth', 'norm_eval', 'style'))  # nothing left of ResNet
    out_indices = (1, 2, 3) if det in STAGES_2_TO_4 else (0, 1, 2, 3)
    assert tuple(backbone.out_indices) == out_indices
    assert cfg.model.neck.in_channels == [EMBED_DIMS[size] * 2**i for i in out_indices]


@pytest.mark.parametrize('name', CONFIGS)
def test_schedule_batch_and_training_scales(name):
    det, sched = detector_of(name), name[-2:]
    cfg = load_config(name)
    epochs, milestones = {'1x': (12, [8, 11]), '3x': (36, [27, 33])}[sched]
    assert cfg.train_cfg.max_epochs == epochs
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.begin, warmup.end) == ('LinearLR', False, 0, 1000)
    assert (steps.type, steps.by_epoch, steps.end, steps.milestones, steps.gamma) == \
        ('MultiStepLR', True, epochs, milestones, 0.1)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    optimizer = cfg.optim_wrapper.optimizer
    if det == 'sparse_rcnn':
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 2.5e-5, 1e-4)
        assert cfg.optim_wrapper.clip_grad == dict(max_norm=1, norm_type=2)
        assert cfg.model.rpn_head.num_proposals == 300
    else:
        assert optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
        assert cfg.optim_wrapper.type == 'OptimWrapper' and 'constructor' not in cfg.optim_wrapper
    resizes = [t for t in cfg.train_dataloader.dataset.pipeline if 'Resize' in t.type or 'Choice' in t.type]
    if sched == '1x':
        assert [(t.type, tuple(t.scale), t.keep_ratio) for t in resizes] == [('Resize', (1333, 800), True)]
    else:
        (choice, ) = resizes
        plain, cropped = choice.transforms
        assert [tuple(s) for s in plain[0].scales] == [(short, 1333) for short in range(480, 801, 32)]
        assert [t.type for t in cropped] == ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
        assert tuple(cropped[1].crop_size) == (384, 600)
    with_mask = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'LoadAnnotations'][0].get('with_mask')
    assert bool(with_mask) == (det in MASK_DETECTORS)


def test_cascade_uses_swins_heads_and_evaluates_boxes_and_masks():
    cfg = load_config('cascade_mask_rcnn_focal_t_3x')
    heads = cfg.model.roi_head.bbox_head
    assert len(heads) == 3
    for head in heads:
        assert (head.type, head.num_shared_convs, head.num_shared_fcs) == ('ConvFCBBoxHead', 4, 1)
        assert head.norm_cfg.type in ('BN', 'SyncBN') and head.loss_bbox.type == 'GIoULoss'
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}


@pytest.mark.parametrize('name', ['mask_rcnn_focal_t_3x', 'retinanet_focal_t_3x'])
def test_3x_training_pipeline_gives_multi_scale_and_cropped_images(name, tmp_path):
    """The full-size 3x pipeline on a 480x640 image: the short side lands in 480-800, and the
    crop branch (taken about half the time) shows as a changed aspect ratio."""
    cfg = load_config(name)
    pipeline = Compose(cfg.train_dataloader.dataset.pipeline)
    sample = write_sample(tmp_path, 0, (640, 480))
    random.seed(0)
    np.random.seed(0)
    shapes = [pipeline(copy.deepcopy(sample))['data_samples'].img_shape for _ in range(16)]
    assert all(480 <= min(shape) <= 800 and max(shape) <= 1333 for shape in shapes)
    aspect = [h / w for h, w in shapes]
    assert any(abs(a - 0.75) < 0.01 for a in aspect) and any(abs(a - 0.75) > 0.05 for a in aspect)


# ---------------------------------------------------------------------------------------------
# Model size and the optimizer


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_the_papers_model_size(name):
    det, size = detector_of(name), name.split('_')[-2]
    cfg = load_config(name)
    cfg.model.backbone.init_cfg = None  # the ImageNet checkpoint cannot be downloaded here
    model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    assert params / 1e6 == pytest.approx(OUR_PARAMS_M[det, size], abs=0.005), name
    if (det, size) in PAPER_PARAMS:
        paper = PAPER_PARAMS[det, size] * 1e6
        assert abs(params - paper) / paper < 0.02, f'{name}: {params / 1e6:.2f}M vs paper {paper / 1e6:.0f}M'


@pytest.mark.parametrize('name', DETECTOR_CONFIGS)
def test_optimizer_gives_no_decay_to_position_tables_and_norms(name):
    cfg = shrink_backbone(load_config(name))
    model = build_model(cfg)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay_of = {id(p): group['weight_decay'] for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    base_decay = cfg.optim_wrapper.optimizer.weight_decay
    norm_params = {id(p) for m in model.modules()
                   if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
                   for p in m.parameters(recurse=False)}
    table_kinds = set()
    for param_name, param in model.named_parameters():
        is_table = 'relative_position_bias_table' in param_name
        if is_table:
            table_kinds.add(re.sub(r'^.*\.attn\.', '', param_name))
        expected = 0. if is_table or id(param) in norm_params else base_decay
        assert decay_of[id(param)] == expected, param_name
    assert table_kinds == {'relative_position_bias_table', 'relative_position_bias_table_to_neighbors',
                           'relative_position_bias_table_to_windows.0'}
    if name.startswith('cascade'):  # the heads' BN (named `bn`, not `norm`) is covered too
        assert any(decay_of[id(p)] == 0. for n, p in model.named_parameters() if '.bn.' in n)


# ---------------------------------------------------------------------------------------------
# Training and prediction with real models


def write_sample(root, index, size):
    """A COCO-style record (as CocoDataset parses it) of a synthetic RGB image with two objects."""
    width, height = size
    rng = np.random.default_rng(index)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    boxes = [[0.1, 0.15, 0.55, 0.7], [0.45, 0.3, 0.95, 0.9]]
    instances = []
    for label, (x1, y1, x2, y2) in zip((3, 17), boxes):
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        image[int(y1):int(y2), int(x1):int(x2)] = rng.integers(120, 255, 3, dtype=np.uint8)
        instances.append(dict(bbox=[x1, y1, x2, y2], bbox_label=label, ignore_flag=0,
                              mask=[[x1, y1, x2, y1, x2, y2, x1, y2]]))
    path = str(root / f'image{index}.png')
    Image.fromarray(image).save(path)
    return dict(img_path=path, img_id=index, width=width, height=height, instances=instances)


def make_batch(pipeline_cfg, root, sizes=((320, 240), (280, 360))):
    pipeline = Compose(shrink_scales(copy.deepcopy(pipeline_cfg)))
    return pseudo_collate([pipeline(write_sample(root, i, size)) for i, size in enumerate(sizes)])


@pytest.mark.parametrize('name', DETECTOR_CONFIGS)
def test_one_training_step_reaches_the_backbone(name, tmp_path):
    cfg = fewer_rois(shrink_backbone(load_config(name)))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = make_batch(cfg.train_dataloader.dataset.pipeline, tmp_path)
    assert all(len(sample.gt_instances) > 0 for sample in batch['data_samples'])

    data = model.data_preprocessor(batch, training=True)
    loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss) and loss > 0, log_vars
    optim_wrapper.backward(loss)
    backbone = model.backbone
    first_layer = backbone.patch_embed.proj.weight
    for param in [first_layer] + [stage.blocks[0].attn.qkv.weight for stage in backbone.layers]:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    before = first_layer.detach().clone()
    optim_wrapper.step()
    assert not torch.equal(before, first_layer.detach())


@pytest.mark.parametrize('name', DETECTOR_CONFIGS)
def test_predict_on_a_small_image(name, tmp_path):
    cfg = fewer_rois(shrink_backbone(load_config(name)))
    # An untrained model scores every box near its prior; keep them all, so there is output to check.
    for test_cfg in (cfg.model.test_cfg, cfg.model.test_cfg.get('rcnn')):
        if test_cfg is not None and 'score_thr' in test_cfg:
            test_cfg.score_thr = 0.
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sizes = ((320, 240), (280, 360))
    batch = make_batch(cfg.test_dataloader.dataset.pipeline, tmp_path, sizes)
    with torch.no_grad():
        results = model.test_step(batch)
    assert len(results) == 2
    for result, (width, height) in zip(results, sizes):
        assert isinstance(result, DetDataSample)
        pred = result.pred_instances
        assert 0 < len(pred) <= cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg).max_per_img
        assert pred.bboxes.shape == (len(pred), 4) and torch.isfinite(pred.bboxes).all()
        if detector_of(name) != 'sparse_rcnn':  # Sparse R-CNN does not clip boxes to the image
            # boxes come back clipped to the original image (up to rounding in the rescale)
            assert pred.bboxes[:, 0::2].min() >= 0 and pred.bboxes[:, 0::2].max() <= width + 1e-3
            assert pred.bboxes[:, 1::2].min() >= 0 and pred.bboxes[:, 1::2].max() <= height + 1e-3
        assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
        assert ((pred.labels >= 0) & (pred.labels < 80)).all()
        if detector_of(name) in MASK_DETECTORS:
            assert pred.masks.shape == (len(pred), height, width)
