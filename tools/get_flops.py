"""Parameters and FLOPs of the model a detection or segmentation config builds.

    python tools/get_flops.py configs/det/mask_rcnn_focal_t_1x.py
    python tools/get_flops.py CONFIG --shape 800 1333 --cfg-options model.backbone.arch=small

The input is one synthetic 3xHxW image: 800x1280 (HxW) for detection and 512x2048 for a config
whose default_scope is mmseg, the sizes the paper quotes FLOPs at; ``--shape H W`` overrides.
FLOPs come from mmengine's model complexity analysis (``mmengine.analysis.FlopAnalyzer``), which
counts a multiply-add as one FLOP and traces the model's ``mode='tensor'`` forward: for a
two-stage detector that is the RPN, its proposals through the box heads and the first 100
through the mask head; for a segmentor the decode head (not the auxiliary head, which only
trains). mmdet 3's cascade forward runs every stage's mask head on all proposals (1000) instead;
those are counted on 100 RoIs per stage, as mmdet 2's forward_dummy did for the published
numbers (Swin-T Cascade Mask R-CNN: 745G). Parameters are all of the model's, auxiliary heads
included. No pretrained weights are loaded: the model has mmdet's/mmseg's own initialisation.
"""
import argparse
import copy
import logging
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import mmfocal  # noqa: F401  registers FocalTransformer in mmdet's and mmseg's MODELS

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048)}
MASK_ROIS = 100  # RoIs a mask head is counted on, as StandardRoIHead.forward does

# PyTorch's fused attention kernels, which the backbone calls on CPU: mmengine has no formula
# for them, and leaving them out would drop every attention product from the count.
FUSED_ATTENTION_OPS = (
    'aten::scaled_dot_product_attention',
    'aten::_scaled_dot_product_attention_math',
    'aten::_scaled_dot_product_flash_attention',
    'aten::_scaled_dot_product_flash_attention_for_cpu',
    'aten::_scaled_dot_product_efficient_attention',
    'aten::_scaled_dot_product_cudnn_attention',
)


def fused_attention_flops(inputs: list, outputs: list) -> int:
    """softmax(q k^T) v as its two matmuls, one FLOP per multiply-add like mmengine's matmul.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv) -> batch * Lq * Lk * (d + dv).
    """
    q_shape, k_shape, v_shape = (get_shape(value) for value in inputs[:3])
    batch = math.prod(q_shape[:-2])
    return batch * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


class _TensorForward(nn.Module):
    """Calls a detector or segmentor on one image batch in ``mode='tensor'``, so it can be traced."""

    def __init__(self, model: nn.Module, data_samples: list):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def _scope_of(cfg: Config) -> str:
    scope = cfg.get('default_scope', 'mmdet')
    if scope not in DEFAULT_SHAPES:
        raise ValueError(f'{cfg.filename or "the config"}: default_scope {scope!r} is neither mmdet nor mmseg; '
                         'get_flops only knows detection and segmentation configs')
    return scope


def default_shape(cfg: Config) -> Tuple[int, int]:
    """(H, W) the paper quotes FLOPs at: 800x1280 for detection, 512x2048 for segmentation."""
    return DEFAULT_SHAPES[_scope_of(cfg)]


def _build_model(cfg: Config, scope: str) -> nn.Module:
    """The model with mmdet's/mmseg's own initialisation (a detector's proposals depend on it:
    Sparse R-CNN's start as whole-image boxes) and without any pretrained weights."""
    init_default_scope(scope)
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if 'backbone' in model_cfg:
        model_cfg.backbone.init_cfg = None
    # SyncBN needs a process group; a plain BN counts the same.
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.eval()


def _data_samples(scope: str, height: int, width: int) -> list:
    metainfo = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                    batch_input_shape=(height, width), scale_factor=(1., 1.))
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=metainfo)]
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    # Sparse R-CNN's tensor forward runs its training path, whose assigner wants a ground truth.
    sample = DetDataSample(metainfo=metainfo)
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[0., 0., width / 2, height / 2]]),
                                       labels=torch.tensor([0]))
    return [sample]


def _cascade_mask_heads(model: nn.Module) -> Optional[nn.Module]:
    """The mask heads of a cascade RoI head, or None."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return None
    from mmdet.models.roi_heads import CascadeRoIHead
    return roi_head.mask_head if isinstance(roi_head, CascadeRoIHead) and roi_head.with_mask else None


def complexity(cfg: Config, shape: Optional[Sequence[int]] = None,
               cascade_mask_rois: Optional[int] = MASK_ROIS) -> Dict:
    """Params and FLOPs of ``cfg.model`` on one (H, W) = ``shape`` image (the paper's by default).

    ``cascade_mask_rois``: the RoIs a cascade's mask heads are counted on (None: as many as
    mmdet's forward runs them on). Returns dict(params, flops, shape, scope, unsupported_ops,
    mask_rois): ``unsupported_ops`` maps the traced operators the analysis does not count to
    how often they ran; ``mask_rois`` is (RoIs the cascade mask heads ran on, RoIs counted), or
    None for other models.
    """
    scope = _scope_of(cfg)
    height, width = DEFAULT_SHAPES[scope] if shape is None else shape
    if height < 1 or width < 1:
        raise ValueError(f'the input shape must be two positive integers H W, got {height} {width}')
    model = _build_model(cfg, scope)
    params = sum(p.numel() for p in model.parameters())
    # A fixed random image: a detector's proposal count (and so its head FLOPs) depends on it.
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    analyzer = FlopAnalyzer(_TensorForward(model, _data_samples(scope, height, width)), (image, ))
    analyzer.set_op_handle(**{op: fused_attention_flops for op in FUSED_ATTENTION_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)

    mask_heads, rois_seen = _cascade_mask_heads(model), []
    if mask_heads is not None:
        hook = mask_heads[0].register_forward_pre_hook(lambda module, args: rois_seen.append(len(args[0])))
    with torch.no_grad():
        flops = analyzer.total()
    mask_rois = None
    if mask_heads is not None:
        hook.remove()
        ran_on = rois_seen[0]
        counted = ran_on if cascade_mask_rois is None else min(ran_on, cascade_mask_rois)
        # Mask heads are convolutions on per-RoI features: their FLOPs scale with the RoIs.
        mask_flops = analyzer.by_module()['model.roi_head.mask_head']
        flops -= mask_flops - mask_flops * counted // ran_on
        mask_rois = (ran_on, counted)
    return dict(params=params, flops=flops, shape=(height, width), scope=scope,
                unsupported_ops=dict(analyzer.unsupported_ops()), mask_rois=mask_rois)


def format_line(config: str, result: Dict) -> str:
    height, width = result['shape']
    return (f'{config}: params {result["params"] / 1e6:.2f} M, FLOPs {result["flops"] / 1e9:.1f} G '
            f'at input 3x{height}x{width} (HxW)')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default 800 1280 for detection, 512 2048 '
                        'for segmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (as tools/train.py)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Tuple[str, Dict]:
    args = parse_args(argv)
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        result = complexity(cfg, args.shape)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'get_flops: {error}') from error
    line = format_line(args.config, result)
    print(line)
    if result['mask_rois'] and result['mask_rois'][0] != result['mask_rois'][1]:
        print('  cascade mask heads counted on {1} of the {0} RoIs they ran on, as mmdet 2 did '
              '(see the docstring)'.format(*result['mask_rois']))
    if result['unsupported_ops']:
        skipped = ', '.join(f'{op} x{n}' for op, n in sorted(result['unsupported_ops'].items()))
        print(f'  not counted (no FLOP formula in mmengine): {skipped}')
    return line, result


if __name__ == '__main__':
    main()
