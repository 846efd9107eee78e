"""Parameters and FLOPs of a detector, a segmentor or a backbone.

FLOPs come from mmengine's model complexity analysis (``mmengine.analysis.FlopAnalyzer``), which
counts a multiply-add as one FLOP, with PyTorch's fused attention kernels counted as their two
matrix products (mmengine has no formula for them; left out, every attention product of a model
that calls them would be dropped from the count).

For a detection or segmentation config (:func:`complexity`) the input is one synthetic 3xHxW
image: 800x1280 (HxW) for detection and 512x2048 for a config whose default_scope is mmseg, the
sizes the paper quotes FLOPs at. The analysis traces the model's ``mode='tensor'`` forward: for a
two-stage detector that is the RPN, its proposals through the box heads and the first 100 through
the mask head; for a segmentor the decode head (not the auxiliary head, which only trains).
mmdet 3's cascade forward runs every stage's mask head on all proposals (1000) instead; those are
counted on 100 RoIs per stage, as mmdet 2's forward_dummy did for the published numbers (Swin-T
Cascade Mask R-CNN: 745G). Parameters are all of the model's, auxiliary heads included. No
pretrained weights are loaded: the model has mmdet's/mmseg's own initialisation
(:func:`mmfocal.apis.build_model_from_config`).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config

from ..apis import build_model_from_config
from ..errors import BadArgumentError, ConfigError

__all__ = ['DEFAULT_SHAPES', 'FUSED_ATTENTION_OPS', 'fused_attention_flops', 'flop_analyzer', 'backbone_flops',
           'default_shape', 'complexity']

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048)}
MASK_ROIS = 100  # RoIs a mask head is counted on, as StandardRoIHead.forward does

# PyTorch's fused attention kernels: mmengine has no formula for them.
FUSED_ATTENTION_OPS = (
    'aten::scaled_dot_product_attention',
    'aten::_scaled_dot_product_attention_math',
    'aten::_scaled_dot_product_flash_attention',
    'aten::_scaled_dot_product_flash_attention_for_cpu',
    'aten::_scaled_dot_product_efficient_attention',
    'aten::_scaled_dot_product_cudnn_attention',
)


def fused_attention_flops(inputs: list, outputs: list) -> int:
    """The FLOPs of softmax(q k^T) v as its two matmuls (a multiply-add is one FLOP, as mmengine's).

    An mmengine FLOP handle (``FlopAnalyzer.set_op_handle``) for PyTorch's fused attention ops.

    Args:
        inputs (list): The traced op's inputs: q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv)
            first.
        outputs (list): Its outputs (not used).

    Returns:
        int: batch * Lq * Lk * (d + dv), batch the product of the leading dimensions.
    """
    q_shape, k_shape, v_shape = (get_shape(value) for value in inputs[:3])
    batch = math.prod(q_shape[:-2])
    return batch * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def flop_analyzer(module: nn.Module, inputs: Tuple) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer with the fused attention kernels counted, without its warnings.

    Args:
        module (nn.Module): The module to analyse.
        inputs (tuple): The arguments of ``module(*inputs)``.

    Returns:
        FlopAnalyzer: ``.total()``, ``.by_module()``, ``.by_operator()`` and
        ``.unsupported_ops()`` (the traced operators it does not count, with how often they ran)
        as mmengine's.
    """
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.set_op_handle(**{op: fused_attention_flops for op in FUSED_ATTENTION_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def backbone_flops(backbone: nn.Module, shape: Sequence[int], batch: int = 1, in_channels: int = 3) -> int:
    """The FLOPs of a backbone on a random image batch, its attention included.

    Args:
        backbone (nn.Module): The backbone, or any module of one NCHW image batch.
        shape (Sequence[int]): The images' (H, W).
        batch (int): Images in the batch. Defaults to 1.
        in_channels (int): Channels of the images. Defaults to 3.

    Returns:
        int: FLOPs of one forward pass on a (batch, in_channels, H, W) input.
    """
    height, width = shape
    inputs = torch.randn(batch, in_channels, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return flop_analyzer(backbone, (inputs, )).total()


class _TensorForward(nn.Module):
    """Calls a detector or segmentor on one image batch in ``mode='tensor'``, so it can be traced."""

    def __init__(self, model: nn.Module, data_samples: list):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        """The model's raw outputs for one image batch.

        Args:
            inputs (torch.Tensor): Preprocessed images, (B, 3, H, W).

        Returns:
            object: What ``model(inputs, data_samples, mode='tensor')`` returns.
        """
        return self.model(inputs, self.data_samples, mode='tensor')


def _scope_of(cfg: Config) -> str:
    scope = cfg.get('default_scope', 'mmdet')
    if scope not in DEFAULT_SHAPES:
        raise ConfigError(f'{cfg.filename or "the config"}: default_scope {scope!r} is neither mmdet nor mmseg; '
                          'get_flops only knows detection and segmentation configs')
    return scope


def default_shape(cfg: Config) -> Tuple[int, int]:
    """The input the paper quotes FLOPs at for a config.

    Args:
        cfg (Config): A detection (default_scope mmdet) or segmentation (mmseg) config.

    Returns:
        tuple[int, int]: (H, W): (800, 1280) for detection, (512, 2048) for segmentation.
    """
    return DEFAULT_SHAPES[_scope_of(cfg)]


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
    """The parameters and FLOPs of a config's model on one image.

    Args:
        cfg (Config): A detection or segmentation config.
        shape (Sequence[int], optional): The image's (H, W). Defaults to None, the paper's
            (:func:`default_shape`).
        cascade_mask_rois (int, optional): The RoIs a cascade's mask heads are counted on; None:
            as many as mmdet's forward runs them on. Defaults to 100, as mmdet 2 counted.

    Returns:
        dict: ``params``, ``flops``, ``shape`` (H, W), ``scope`` (mmdet or mmseg),
        ``unsupported_ops`` (the traced operators the analysis does not count, with how often
        they ran) and ``mask_rois`` ((RoIs the cascade mask heads ran on, RoIs counted), or None
        for other models).

    Raises:
        ConfigError: The config is neither mmdet's nor mmseg's.
        BadArgumentError: ``shape`` is not two positive sizes.
    """
    scope = _scope_of(cfg)
    height, width = DEFAULT_SHAPES[scope] if shape is None else shape
    if height < 1 or width < 1:
        raise BadArgumentError(f'the input shape must be two positive integers H W, got {height} {width}')
    model = build_model_from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    # A fixed random image: a detector's proposal count (and so its head FLOPs) depends on it.
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    analyzer = flop_analyzer(_TensorForward(model, _data_samples(scope, height, width)), (image, ))

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
