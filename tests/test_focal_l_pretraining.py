"""Focal-L's start: configs/cls/focal_l_in21k.py (ImageNet-22K at 224, window 7, Swin-L's recipe)
and configs/cls/focal_l_in21k_ft_in1k.py (its fine-tune on ImageNet-1K at 384, window 12) make
the checkpoint the three Focal-L systems start from.

End to end at the mini classifier's sizes: tools/train.py trains the ImageNet-22K config on an
ImageNet-21k made here in mmpretrain's layout, then the fine-tune config from that checkpoint (its
head not used, a new one of another number of classes); either checkpoint then goes into the
backbones of the DyHead, HTC++ and UperNet configs through their own init_cfg, with every
backbone tensor of the classifier loaded (tables of another window resized) and nothing
initialised but what dense prediction adds (output norms, stage 4's rolled-key tables)."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

import mmfocal
from mmfocal.engine.safe_load import load_checkpoint_file
from mmfocal.models.checkpoints import load_pretrained

from .helpers import (
    CLS_CONFIGS,
    MINI_CLASSIFIER,
    make_image_folder,
    run_tool,
    shrink_backbone,
    tiny_classifier_config,
)
from .test_focal_l import DYHEAD, FOCAL_L_CHECKPOINT, HTC, UPERNET, WINDOWS, load, name_of

IN21K = osp.join(CLS_CONFIGS, 'focal_l_in21k.py')
FINE_TUNE = osp.join(CLS_CONFIGS, 'focal_l_in21k_ft_in1k.py')
IN21K_CLASSES = 6  # the tiny ImageNet-21k's; the fine-tune's ImageNet-1K has 10 (a new head)
CLASSIFIER_WINDOWS = {'in21k': 7, 'fine_tune': 12}
REGISTRIES = {DYHEAD: mmfocal.MMDET_MODELS, HTC: mmfocal.MMDET_MODELS, UPERNET: mmfocal.MMSEG_MODELS}
# What a dense-prediction backbone takes from a classifier's checkpoint and what it does not.
NOT_USED = ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']  # the final norm and the head


def parameter_count(config, part='backbone'):
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    return sum(p.numel() for p in getattr(model, part).parameters())


def test_in21k_config_is_swin_ls_imagenet_22k_recipe():
    cfg = Config.fromfile(IN21K)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == ('FocalTransformer', 'large', 0.2)
    assert 'window_size' not in backbone and tuple(backbone.expand_sizes) == (3, 3, 3, 0)  # window 7 at 224
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == 21841
    dataset = cfg.train_dataloader.dataset
    assert (dataset.type, dataset.data_root, dataset.split) == ('ImageNet21k', 'data/imagenet21k', 'train')
    crop = [t for t in dataset.pipeline if t.type == 'RandomResizedCrop'][0]
    assert crop.scale == 224 and {'RandAugment', 'RandomErasing'} <= {t.type for t in dataset.pipeline}
    assert cfg.val_dataloader is None and cfg.val_cfg is None and cfg.test_dataloader is None
    # 4096 a step on 8 GPUs; the 1K recipe's rates (Swin's 1.25e-4 per 512 pictures), its weight decay.
    assert 8 * cfg.train_dataloader.batch_size * cfg.optim_wrapper.accumulative_counts == 4096
    assert cfg.auto_scale_lr.base_batch_size == 8 * cfg.train_dataloader.batch_size
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.25e-4 * 4096 / 512)
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05 and cfg.optim_wrapper.clip_grad.max_norm == 5.0
    warm_up, cosine = cfg.param_scheduler
    assert (cfg.train_cfg.max_epochs, warm_up.end, cosine.begin) == (90, 5, 5)
    assert warm_up.start_factor == pytest.approx(1e-3) and cosine.eta_min_ratio == pytest.approx(1e-2)
    in1k = Config.fromfile(osp.join(CLS_CONFIGS, 'focal_t_in1k.py'))
    assert cfg.model.train_cfg.augments == in1k.model.train_cfg.augments  # Mixup 0.8 / CutMix 1.0
    assert parameter_count(IN21K) == 198_065_640  # Swin-L: 197M


def test_fine_tune_config_is_swin_ls_22k_to_1k_recipe_at_384():
    cfg = Config.fromfile(FINE_TUNE)
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.window_size, backbone.drop_path_rate) == ('large', 12, 0.2)
    assert cfg.model.head.num_classes == 1000 and cfg.model.head.in_channels == 1536
    # It starts from the ImageNet-22K config's last checkpoint, in its default work dir.
    in21k = Config.fromfile(IN21K)
    assert backbone.init_cfg == dict(type='Pretrained', resize_position_tables=True,
                                     checkpoint=f'work_dirs/focal_l_in21k/epoch_{in21k.train_cfg.max_epochs}.pth')
    train, test = cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline
    assert [t.scale for t in train if t.type == 'RandomResizedCrop'] == [384]
    assert [(t.type, t.scale) for t in test if 'Resize' in t.type] == [('Resize', 384)]  # no centre crop
    assert 8 * cfg.train_dataloader.batch_size * cfg.optim_wrapper.accumulative_counts == 1024
    assert cfg.auto_scale_lr.base_batch_size == 8 * cfg.train_dataloader.batch_size
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.lr == pytest.approx(2e-5 * 1024 / 512) and optimizer.weight_decay == 1e-8
    warm_up, cosine = cfg.param_scheduler
    assert (cfg.train_cfg.max_epochs, warm_up.end, cosine.begin) == (30, 5, 5)
    assert parameter_count(FINE_TUNE) == 212_290_620  # window 12's larger tables
    # The three Focal-L systems start from its last checkpoint, in its default work dir.
    assert FOCAL_L_CHECKPOINT == f'work_dirs/focal_l_in21k_ft_in1k/epoch_{cfg.train_cfg.max_epochs}.pth'


def test_without_imagenet_22k_the_tools_name_where_it_goes(tmp_path, monkeypatch):
    from mmfocal.cli import check_dataset_paths
    from mmfocal.errors import MissingFileError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingFileError, match=r'focal_l_in21k\.py: train_dataloader\.dataset\.data_root = '
                       r'data/imagenet21k \(under .*\) does not exist: ImageNet-22K \(train/, .*meta/train\.txt.*\) '
                       r'goes in data/imagenet21k/'):
        check_dataset_paths(Config.fromfile(IN21K), IN21K)


@pytest.fixture(scope='module')
def focal_l_start(imagenet_workspace, tmp_path_factory):
    """tools/train.py on both configs at the mini classifier's size: ImageNet-22K on an ImageNet-21k
    of 6 classes, 2 pictures each (2 epochs of 3 iterations), then the fine-tune from its checkpoint
    on the 10-class ImageNet of conftest (2 epochs of 2 iterations, validated at the end)."""
    root = tmp_path_factory.mktemp('focal_l_start')
    data = make_image_folder(str(root / 'data' / 'imagenet21k'), num_classes=IN21K_CLASSES, per_class=dict(train=2))
    in21k = tiny_classifier_config(root / 'in21k.py', data, base=IN21K, **{
        'model.head.num_classes': IN21K_CLASSES, 'data_preprocessor.num_classes': IN21K_CLASSES})
    _, in21k_log = run_tool('train.py', in21k, '--work-dir', root / 'in21k', cwd=root)
    pretrained = root / 'in21k' / 'epoch_2.pth'
    fine_tune = tiny_classifier_config(root / 'fine_tune.py', str(imagenet_workspace / 'data' / 'imagenet'),
                                       base=FINE_TUNE, **{'model.backbone.init_cfg.checkpoint': str(pretrained),
                                                          'train_cfg.val_interval': 2})
    _, fine_tune_log = run_tool('train.py', fine_tune, '--work-dir', root / 'fine_tune', cwd=root)
    return dict(in21k=pretrained, fine_tune=root / 'fine_tune' / 'epoch_2.pth', in21k_log=in21k_log,
                fine_tune_log=fine_tune_log)


def state_of(checkpoint):
    return load_checkpoint_file(str(checkpoint), map_location='cpu')['state_dict']


def test_fine_tune_takes_the_22k_classifier_but_its_head(focal_l_start):
    """The fine-tune run's backbone loads every tensor of the ImageNet-22K classifier's, the final
    norm included, its window-7 tables resized to window 12; the 21k head is not used, the new head
    has the 1K set's classes."""
    assert 'Epoch(train) [2][3/3]' in focal_l_start['in21k_log']  # 12 pictures of the ImageNet-21k, 4 a batch
    pretrained, tuned = state_of(focal_l_start['in21k']), state_of(focal_l_start['fine_tune'])
    backbone_keys = [k for k in pretrained if k.startswith('backbone.')]
    line = re.search(rf'FocalTransformer: loaded (\d+) tensors from {re.escape(str(focal_l_start["in21k"]))}; '
                     r'not used: head\.weight, head\.bias and 0 index buffers \(recomputed\); initialised \(not in '
                     r'the checkpoint\): none; resized position tables: (.*)$', focal_l_start['fine_tune_log'], re.M)
    assert line, focal_l_start['fine_tune_log'][-3000:]
    assert int(line.group(1)) == len(backbone_keys) and 'backbone.norm3.weight' in backbone_keys
    resized = re.findall(r'(layers\.\d+\.blocks\.\d+\.[\w.]+): \(', line.group(2))
    assert resized and all(re.search(r'relative_position_bias_table|pool_layers', k) for k in resized)
    assert pretrained['head.fc.weight'].shape == (IN21K_CLASSES, 256) and tuned['head.fc.weight'].shape == (10, 256)
    assert re.search(r'Epoch\(val\) \[2\]\[3/3\] +accuracy/top1', focal_l_start['fine_tune_log'])


@pytest.mark.parametrize('classifier', list(CLASSIFIER_WINDOWS))
@pytest.mark.parametrize('system', [DYHEAD, HTC, UPERNET], ids=name_of)
def test_either_classifier_starts_each_focal_l_system(system, classifier, focal_l_start):
    """The system's backbone at the mini size, its init_cfg as the config has it: every tensor of
    the classifier's backbone loaded but its final norm (the output norms are the system's own),
    position tables of another window resized, and initialised only the output norms and stage 4's
    rolled-key tables (a single window in the classifier, none there)."""
    checkpoint = str(focal_l_start[classifier])
    cfg = load(system)
    init_cfg = dict(cfg.model.backbone.init_cfg, checkpoint=checkpoint)
    backbone_cfg = shrink_backbone(cfg, MINI_CLASSIFIER).model.backbone
    backbone = REGISTRIES[system].build(dict(backbone_cfg, init_cfg=None))
    report = load_pretrained(backbone, checkpoint, resize_position_tables=init_cfg['resize_position_tables'])

    trained = state_of(checkpoint)
    assert report['dropped'] == NOT_USED
    assert sorted(report['loaded']) == sorted(k[len('backbone.'):] for k in trained
                                              if k.startswith('backbone.') and not k.startswith('backbone.norm'))
    stage4 = [f'layers.3.blocks.{j}.attn.relative_position_bias_table_to_neighbors'
              for j in range(MINI_CLASSIFIER['depths'][3])]
    norms = [f'norm{i}.{p}' for i in backbone_cfg.out_indices for p in ('weight', 'bias')]
    assert sorted(report['initialised']) == sorted(norms + stage4)
    resized = {entry.split(':')[0] for entry in report['resized']}
    assert bool(resized) == (WINDOWS[system] != CLASSIFIER_WINDOWS[classifier])
    own = backbone.state_dict()
    for key in report['loaded']:
        if key not in resized:
            assert torch.equal(own[key], trained[f'backbone.{key}']), key
