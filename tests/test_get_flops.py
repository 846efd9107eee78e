"""mmfocal.analysis.flops and tools/get_flops.py: parameters and FLOPs of detection and
segmentation configs and of backbones, with fused attention counted, cascade mask heads on 100
RoIs, and clear errors. The models are the real configs' with a one-block, 32-channel backbone
and small inputs."""
import copy
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from mmfocal.analysis.flops import FUSED_ATTENTION_OPS, backbone_flops, complexity, default_shape, flop_analyzer
from mmfocal.models.backbones import FocalTransformer

from .helpers import ROOT, ScriptLauncher, shrink_backbone


@pytest.fixture(scope='module')
def get_flops():
    """``get_flops(*ARGS)``: ``python tools/get_flops.py ARGS`` from the repository root, the
    completed process; mmfocal imported once for all of them (:class:`~tests.helpers.ScriptLauncher`)."""
    with ScriptLauncher('get_flops.py', preload=['mmfocal']) as launcher:
        yield launcher


def tiny_config(path):
    """The config at ``path`` (from the repository root) with the tiny backbone and heads to match."""
    return shrink_backbone(Config.fromfile(osp.join(ROOT, path)))


def count(module, *inputs):
    analyzer = flop_analyzer(module, inputs)
    with torch.no_grad():
        return analyzer.total(), analyzer.unsupported_ops()


def lambda_module(function):
    module = nn.Module()
    module.forward = function
    return module


class Attention(nn.Module):

    def __init__(self, fused_cpu_kernel):
        super().__init__()
        self.fused_cpu_kernel = fused_cpu_kernel

    def forward(self, q, k, v):
        if self.fused_cpu_kernel:  # the call the backbone makes on CPU
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)[0]
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize('fused_cpu_kernel', [False, True])
def test_fused_attention_counts_as_its_two_matmuls(fused_cpu_kernel):
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 8)
    flops, unsupported = count(Attention(fused_cpu_kernel), q, k, v)
    explicit, _ = count(lambda_module(lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v), q, k, v)
    assert flops == explicit == 2 * 3 * 10 * 12 * (8 + 8)
    assert not unsupported


def test_backbone_flops_include_the_attention_products():
    """One stage of one block at a 28x28 input: a 7x7 map, one window. The traced attention (the
    standard-ops path) computes its two products, q k^T and weights times v, over 218 keys per
    query: 49 window tokens, the 120 rolled keys (the ring's tokens, each once; removed by a logit
    at this size) and 49 pooled tokens, across the 16 channels of all heads; they are all of the
    traced matmuls."""
    torch.manual_seed(0)
    backbone = FocalTransformer(embed_dims=16, depths=(1, ), num_heads=(2, ), focal_levels=(2, ), focal_windows=(7, ),
                                expand_sizes=(3, ), out_indices=(0, ), drop_path_rate=0.).eval()
    analyzer = flop_analyzer(backbone, (torch.randn(1, 3, 28, 28), ))
    with torch.no_grad():
        total, by_operator = analyzer.total(), analyzer.by_operator()
    assert by_operator['matmul'] == 49 * (49 + 120 + 49) * (16 + 16)
    assert backbone_flops(backbone, (28, 28)) == total
    assert backbone_flops(backbone, (56, 56)) == 4 * total  # four windows
    assert backbone_flops(backbone, (28, 28), batch=2) == 2 * total


def test_detector_params_and_flops(capsys):
    cfg = tiny_config('configs/det/retinanet_focal_t_1x.py')
    result = complexity(cfg, (96, 128))
    assert result['scope'] == 'mmdet' and result['shape'] == (96, 128)
    from mmdet.registry import MODELS
    assert result['params'] == sum(p.numel() for p in MODELS.build(copy.deepcopy(cfg.model)).parameters())
    assert result['flops'] > 0 and result['mask_rois'] is None
    assert not set(result['unsupported_ops']) & set(FUSED_ATTENTION_OPS)
    # FLOPs grow with the input (convolutions and attention at every position)
    assert complexity(cfg, (192, 256))['flops'] > 3 * result['flops']


def test_default_shapes_are_the_papers():
    det = Config.fromfile(osp.join(ROOT, 'configs/det/mask_rcnn_focal_t_1x.py'))
    seg = Config.fromfile(osp.join(ROOT, 'configs/seg/upernet_focal_t_512x512_160k_ade20k.py'))
    assert default_shape(det) == (800, 1280)
    assert default_shape(seg) == (512, 2048)


def test_segmentor_params_and_flops():
    cfg = tiny_config('configs/seg/upernet_focal_t_512x512_160k_ade20k.py')
    result = complexity(cfg, (64, 128))
    assert result['scope'] == 'mmseg' and result['flops'] > 0
    from mmseg.registry import MODELS
    assert result['params'] == sum(p.numel() for p in MODELS.build(copy.deepcopy(cfg.model)).parameters())


def test_cascade_mask_heads_are_counted_on_100_rois():
    cfg = tiny_config('configs/det/cascade_mask_rcnn_focal_t_3x.py')
    cfg.model.test_cfg.rpn.max_per_img = 110  # 110 proposals reach the mask heads (mmdet: 1000)
    # narrow heads keep the test quick
    cfg.model.roi_head.mask_head.conv_out_channels = 16
    for bbox_head in cfg.model.roi_head.bbox_head:
        bbox_head.conv_out_channels = 16
    counted = complexity(cfg, (128, 160))
    all_rois = complexity(cfg, (128, 160), cascade_mask_rois=None)
    assert counted['mask_rois'] == (110, 100) and all_rois['mask_rois'] == (110, 110)
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    mask_head = MODELS.build(copy.deepcopy(cfg.model)).roi_head.mask_head[0].eval()
    per_roi, _ = count(mask_head, torch.randn(1, 256, 14, 14))
    assert all_rois['flops'] - counted['flops'] == 3 * 10 * per_roi  # three stages, ten RoIs each


def test_command_line_prints_params_and_flops(get_flops):
    overrides = ['model.backbone.arch=None', 'model.backbone.embed_dims=32', 'model.backbone.depths=[1,1,1,1]',
                 'model.backbone.num_heads=[1,2,4,8]', 'model.neck.in_channels=[64,128,256]']
    done = get_flops('configs/det/retinanet_focal_t_1x.py', '--shape', '64', '96', '--cfg-options', *overrides)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r'^configs/det/retinanet_focal_t_1x\.py: params \d+\.\d\d M, FLOPs \d+\.\d G '
                     r'at input 3x64x96 \(HxW\)$', out, re.M), out


@pytest.mark.parametrize('argv, message', [
    (['configs/det/no_such_config.py'], 'no_such_config.py'),
    (['configs/det/retinanet_focal_t_1x.py', '--shape', '0', '96'], 'two positive integers H W, got 0 96'),
])
def test_bad_input_is_named_in_one_line(get_flops, argv, message):
    done = get_flops(osp.join(ROOT, argv[0]), *argv[1:])
    out = done.stdout + done.stderr
    last_line = out.strip().splitlines()[-1]
    assert done.returncode == 1 and 'Traceback' not in out
    assert last_line.startswith('get_flops: ') and message in last_line


def test_unknown_scope_is_named():
    cfg = Config(dict(default_scope='mmpretrain', model=dict(type='ImageClassifier')))
    with pytest.raises(ValueError, match="default_scope 'mmpretrain'"):
        complexity(cfg)
