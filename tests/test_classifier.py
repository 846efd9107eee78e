"""The ImageNet classifier: mmpretrain's ImageClassifier with our backbones, built from configs/cls/.

The configs build the published models (parameter counts, the nine published checkpoints' keys),
with the authors' weight decay; an official classifier file loads strictly and gives the official
logits, as published (tools/test.py) and converted (tools/convert_official_ckpt.py --classifier);
a classifier that tools/train.py wrote is what the detection and segmentation backbones start
from, with nothing to convert. The training runs are real (conftest's ``trained_classifier``).
"""
import os
import os.path as osp
import pickle
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmfocal
from mmfocal.apis import convert_official_checkpoint
from mmfocal.engine.safe_load import load_checkpoint_file
from mmfocal.models.checkpoints import (
    CheckpointMismatchError,
    classifier_state_dict,
    extract_state_dict,
    load_classifier_checkpoint,
    load_pretrained,
    match_classifier_state_dict,
    match_state_dict,
)

from .helpers import (
    CLS_CONFIGS,
    DET_CONFIGS,
    DET_DEMO_CONFIG,
    MINI_CLASSES,
    MINI_CLASSIFIER,
    SEG_CONFIGS,
    SEG_DEMO_CONFIG,
    run_tool,
    tiny_classifier_config,
    weight_decay_by_parameter,
)
from .reference_data import load_reference, official_checkpoint_entries

# Each published checkpoint, the config of its model and the parameter count the paper (Focal-T/S/B
# and their conv-embed variants) or the authors' README (Focal-fast) gives.
PUBLISHED = {
    'focal-tiny-is224-ws7.pth': ('focal_t_in1k.py', 28.9e6),
    'focal-small-is224-ws7.pth': ('focal_s_in1k.py', 51.1e6),
    'focal-base-is224-ws7.pth': ('focal_b_in1k.py', 89.8e6),
    'focal-tiny-useconv-is224-ws7.pth': ('focal_t_useconv_in1k.py', 30.8e6),
    'focal-small-useconv-is224-ws7.pth': ('focal_s_useconv_in1k.py', 53.1e6),
    'focal-base-useconv-is224-ws7.pth': ('focal_b_useconv_in1k.py', 93.3e6),
    'focalv2-tiny-useconv-is224-ws7.pth': ('focal_fast_t_in1k.py', 30.2e6),
    'focalv2-small-useconv-is224-ws7.pth': ('focal_fast_s_in1k.py', 51.5e6),
    'focalv2-base-useconv-is224-ws7.pth': ('focal_fast_b_in1k.py', 91.2e6),
}


def entries_of(file_name):
    return official_checkpoint_entries(2 if file_name.startswith('focalv2') else 1)[file_name]


def build_classifier(model_cfg, device='cpu'):
    """An mmpretrain model from a config's ``model`` (on the meta device: shapes only, no memory)."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    with torch.device(device):
        return MODELS.build(model_cfg)


def fake_official_checkpoint(file_name):
    """A published file's keys, shapes and dtypes (meta tensors: no values), under ``model``."""
    keys = entries_of(file_name)['keys']
    return {'model': {k: torch.empty(v['shape'], dtype=getattr(torch, v['dtype'].replace('torch.', '')),
                                     device='meta') for k, v in keys.items()}}


@pytest.mark.parametrize('file_name', sorted(PUBLISHED))
def test_config_builds_the_published_classifier(file_name):
    """The config's classifier has the published model's parameters (count within 1% of the
    paper's, and exactly the official model's), and the published file's keys load into it
    strictly: every key in, every model tensor covered, only the index buffers left over."""
    config_name, paper_count = PUBLISHED[file_name]
    model = build_classifier(Config.fromfile(osp.join(CLS_CONFIGS, config_name)).model, device='meta')
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - paper_count) / paper_count < 0.01, (count, paper_count)
    assert count == entries_of(file_name)['n_parameters']

    state, layout, dropped = classifier_state_dict(fake_official_checkpoint(file_name))
    assert layout == 'official'
    report = match_classifier_state_dict(model, state)
    assert report['initialised'] == [] and sorted(report['loaded']) == sorted(model.state_dict())
    buffers = [k for k, v in entries_of(file_name)['keys'].items() if v['kind'] == 'buffer']
    assert sorted(dropped) == sorted(buffers)


@pytest.mark.parametrize('config_name, exempt_keywords', [
    ('focal_t_in1k.py', ('relative_position_bias_table', 'relative_position_bias_table_to_neighbors',
                         'relative_position_bias_table_to_windows')),
    ('focal_fast_t_in1k.py', ()),
])
def test_weight_decay_is_the_authors(config_name, exempt_keywords):
    """The authors' optimizer: no decay on 1-D parameters, biases and their model's
    ``no_weight_decay_keywords()`` (the position tables; none for Focal-fast, whose bias MLPs'
    weights decay); 0.05 on everything else."""
    cfg = Config.fromfile(osp.join(CLS_CONFIGS, config_name))
    cfg.model.backbone.update(MINI_CLASSIFIER)
    cfg.model.head.in_channels = 256
    model = build_classifier(cfg.model)
    decay = weight_decay_by_parameter(model, cfg.optim_wrapper)
    for name, param in model.named_parameters():
        exempt = param.ndim == 1 or name.endswith('.bias') or any(k in name for k in exempt_keywords)
        assert decay[id(param)] == (0. if exempt else 0.05), name
    if not exempt_keywords:  # the rule above is not vacuous for Focal-fast's bias MLPs
        assert any('coord2rpb' in name and decay[id(p)] == 0.05 for name, p in model.named_parameters())


# --------------------------------------------------- official weights: the official logits

MINI = {'mini_cls': 'focal_t_in1k.py', 'mini_fast_cls': 'focal_fast_t_in1k.py'}


def mini_classifier(name):
    """The config's classifier at the mini reference model's size, with its 10 classes."""
    cfg = Config.fromfile(osp.join(CLS_CONFIGS, MINI[name]))
    cfg.model.backbone.update(MINI_CLASSIFIER, drop_path_rate=0.)
    cfg.model.head.update(num_classes=MINI_CLASSES, in_channels=256)
    return build_classifier(cfg.model).eval()


def write_official_file(name, path):
    """The reference classifier as a published file holds it: float32 weights under ``model``."""
    reference = load_reference(name)
    torch.save({'model': {k: v.float() for k, v in reference['state_dict'].items()}}, path)
    return reference


def logits(model, reference):
    with torch.no_grad():
        return model(reference['input'], mode='tensor')


@pytest.mark.parametrize('name', sorted(MINI))
def test_official_classifier_gives_the_official_logits_as_published_and_converted(name, tmp_path):
    official = tmp_path / f'{name}.pth'
    reference = write_official_file(name, official)
    model = mini_classifier(name)
    report = load_classifier_checkpoint(model, str(official))
    assert report['layout'] == 'official' and report['initialised'] == []
    torch.testing.assert_close(logits(model, reference), reference['logits'], atol=1e-4, rtol=0)

    # tools/convert_official_ckpt.py --classifier: a file mmengine loads strictly.
    converted = tmp_path / 'converted.pth'
    convert_official_checkpoint(str(official), str(converted), classifier=True)
    model = mini_classifier(name)
    load_checkpoint(model, str(converted), map_location='cpu', strict=True)
    torch.testing.assert_close(logits(model, reference), reference['logits'], atol=1e-4, rtol=0)


def test_a_checkpoint_of_another_model_is_refused_with_its_keys(tmp_path):
    write_official_file('mini_fast_cls', tmp_path / 'fast.pth')
    with pytest.raises(CheckpointMismatchError, match=r'fast\.pth: this is a Focal-fast checkpoint, but the '
                       r'model is a FocalTransformer .*: use FocalFastTransformer'):
        load_classifier_checkpoint(mini_classifier('mini_cls'), str(tmp_path / 'fast.pth'))
    reference = load_reference('mini_cls')
    state = {k: v.float() for k, v in reference['state_dict'].items()}
    state['head.weight'], state['head.bias'] = torch.zeros(1000, 256), torch.zeros(1000)
    torch.save({'model': state}, tmp_path / 'in1k.pth')
    with pytest.raises(CheckpointMismatchError, match=r'head\.fc\.weight: checkpoint \(1000, 256\) vs model '
                       r'\(10, 256\)'):
        load_classifier_checkpoint(mini_classifier('mini_cls'), str(tmp_path / 'in1k.pth'))


def test_test_tool_evaluates_an_official_file_as_published(imagenet_workspace, tmp_path):
    """tools/test.py CONFIG focal-*.pth: converted in memory, loaded strictly (and said so), top-1
    and top-5 as mmpretrain's Accuracy reports them, which the dumped predictions agree with."""
    config = tiny_classifier_config(tmp_path / 'tiny.py', str(imagenet_workspace / 'data' / 'imagenet'))
    official = tmp_path / 'focal-mini-is224-ws7.pth'
    write_official_file('mini_cls', official)
    predictions = tmp_path / 'predictions.pkl'
    _, out = run_tool('test.py', config, official, '--work-dir', tmp_path / 'work', '--out', predictions,
                      cwd=imagenet_workspace)
    assert re.search(rf'ImageClassifier: loaded 104 tensors from {re.escape(str(official))} \(an official '
                     r'classifier, converted: norm -> backbone\.norm3, head -> head\.fc, .*\); initialised \(not in '
                     r'the checkpoint\): none', out)
    top1 = float(re.search(r'^  accuracy/top1: ([0-9.]+)$', out, re.M).group(1))
    assert re.search(r'^  accuracy/top5: [0-9.]+$', out, re.M)
    with open(predictions, 'rb') as file:
        samples = pickle.load(file)
    assert len(samples) == MINI_CLASSES
    correct = sum(int(s['pred_label'][0] == s['gt_label'][0]) for s in samples)
    assert top1 == pytest.approx(100 * correct / len(samples))


def test_without_imagenet_the_tools_name_where_it_goes(tmp_path):
    config = osp.join(CLS_CONFIGS, 'focal_t_in1k.py')
    code, out = run_tool('test.py', config, __file__, '--work-dir', tmp_path / 'work', cwd=tmp_path, check=False)
    assert code != 0 and 'Traceback' not in out
    line = out.strip().splitlines()[-1]
    assert line.startswith(f'{config}: test_dataloader.dataset.data_root = data/imagenet (under {tmp_path}) '
                           'does not exist: ImageNet-1k (train/ and val/')
    assert 'goes in data/imagenet/' in line and '--cfg-options test_dataloader.dataset.data_root=...' in line
    # A data root without the split's folder: that folder is named.
    from mmfocal.cli import check_dataset_paths
    from mmfocal.errors import MissingFileError
    cfg = Config.fromfile(config)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    with pytest.raises(MissingFileError, match=r'train_dataloader\.dataset\.data_prefix = '
                       + re.escape(str(tmp_path / 'train')) + ' does not exist'):
        check_dataset_paths(cfg, config)


# --------------------------------------------------- pretrain, then fine-tune: nothing to convert

def test_trained_classifier_is_what_detection_and_segmentation_backbones_start_from(trained_classifier):
    """The checkpoint tools/train.py wrote for a classification config goes, as it is, into the
    demo detector's and segmenter's backbones through init_cfg Pretrained: every backbone tensor
    loaded, the final norm and head not used (as an official file's), the output norms
    initialised."""
    assert re.search(r'Epoch\(val\) \[2\]\[3/3\] +accuracy/top1: [0-9.]+ +accuracy/top5: [0-9.]+',
                     trained_classifier['log'])
    checkpoint = str(trained_classifier['work_dir'] / 'epoch_2.pth')
    # Safe to load: nothing in it beyond what mmfocal's loader takes as data.
    trained = load_checkpoint_file(checkpoint, map_location='cpu')['state_dict']
    assert any(k.startswith('head.fc.') for k in trained) and 'backbone.norm3.weight' in trained
    # The classifier itself takes it back strictly (as tools/test.py loads it).
    classifier = build_classifier(Config.fromfile(trained_classifier['config']).model)
    report = load_classifier_checkpoint(classifier, checkpoint)
    assert report['layout'] == 'mmpretrain' and report['initialised'] == [] and len(report['loaded']) == len(trained)
    for registry, config in ((mmfocal.MMDET_MODELS, DET_DEMO_CONFIG), (mmfocal.MMSEG_MODELS, SEG_DEMO_CONFIG)):
        backbone_cfg = Config.fromfile(config).model.backbone
        backbone = registry.build(dict(backbone_cfg, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
        backbone.init_weights()
        own = backbone.state_dict()
        loaded = [k for k in own if f'backbone.{k}' in trained and not k.startswith('norm')]
        assert len(loaded) == len([k for k in trained if k.startswith('backbone.')]) - 2  # all but norm3
        for key in loaded:
            assert torch.equal(own[key], trained[f'backbone.{key}']), key
        # The output norms are the backbone's own (initialised), the classifier's final norm not used.
        assert torch.equal(own['norm3.weight'], torch.ones(256))
        assert not torch.equal(trained['backbone.norm3.weight'], torch.ones(256))
        report = load_pretrained(registry.build(backbone_cfg), checkpoint)
        assert report['dropped'] == ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']
        assert sorted(report['initialised']) == [f'norm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]


def test_every_detection_and_segmentation_backbone_takes_a_classifier_of_its_size():
    """Keys and shapes (meta tensors), for every det/seg config's backbone: the classifier of
    configs/cls/ with that backbone's settings, as tools/train.py would write it, fits strictly,
    its final norm and head not used. Configs sharing settings share one check."""
    configs = sorted(osp.join(folder, c) for folder in (DET_CONFIGS, SEG_CONFIGS) for c in os.listdir(folder)
                     if c.endswith('.py') and 'demo' not in c)
    backbones = {}
    for config in configs:
        backbone_cfg = Config.fromfile(config).model.backbone
        settings = {k: v for k, v in backbone_cfg.items() if k not in ('init_cfg', 'drop_path_rate')}
        backbones.setdefault(repr(sorted(settings.items())), (settings, []))[1].append(osp.basename(config))
    assert len(configs) > 30 and len(backbones) >= 8  # T/S/B/L, Focal-fast T/S/B, L's window 12
    for settings, users in backbones.values():
        base = 'focal_fast_t_in1k.py' if settings['type'] == 'FocalFastTransformer' else 'focal_t_in1k.py'
        cls_cfg = Config.fromfile(osp.join(CLS_CONFIGS, base)).model
        cls_cfg.backbone.update({k: v for k, v in settings.items() if k not in ('out_indices', 'frozen_stages')})
        classifier = build_classifier(cls_cfg, device='meta')
        state = extract_state_dict({'state_dict': classifier.state_dict()})
        with torch.device('meta'):
            backbone = mmfocal.MMDET_MODELS.build(dict(settings, init_cfg=None))
        report = match_state_dict(backbone, state)
        assert report['dropped'] == ['norm.weight', 'norm.bias', 'head.weight', 'head.bias'], users
