"""Mask R-CNN for the GPU check: models from the configs, a synthetic batch, a training iteration
(:mod:`mmfocal.benchmarking.gpu_check`'s AMP and training-iteration sections)."""
import contextlib
import logging
import os.path as osp
import time
from typing import ContextManager, Optional, Sequence, Tuple, Union

import torch

from .parity import TINY_BACKBONE

__all__ = ['FOCAL_DET_CONFIG', 'SWIN_DET_CONFIG', 'TORCHVISION_ROI_ALIGN', 'mmcv_ops_status', 'swin_det_config_path',
           'build_detector', 'shrink_detector', 'synthetic_det_batch', 'autocast', 'training_iteration',
           'time_iteration']

# The installed package's copy of configs/det/mask_rcnn_focal_t_1x.py, where mmfocal::det/...
# paths are read from (mmfocal.mim.packaged_configs(); mim is above this package).
FOCAL_DET_CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim', 'configs', 'det',
                            'mask_rcnn_focal_t_1x.py')
SWIN_DET_CONFIG = osp.join('swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')  # in mmdet's package
TORCHVISION_ROI_ALIGN = "torchvision's RoIAlign"


def mmcv_ops_status() -> str:
    """'cuda <version>' where mmcv's compiled ops have CUDA kernels, else why not."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except Exception as error:  # noqa: BLE001  (any import failure is the answer)
        return f'mmcv.ops not importable ({type(error).__name__}: {error})'
    version = get_compiling_cuda_version()
    return 'no CUDA kernels (mmcv built without CUDA)' if version == 'not available' else f'cuda {version}'


def swin_det_config_path() -> str:
    """mmdet's Swin-T Mask R-CNN config (:data:`SWIN_DET_CONFIG`) in its installed package."""
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', SWIN_DET_CONFIG)


def build_detector(config_path: str, device: Union[str, torch.device], quick: bool = False,
                   torchvision_roi_align: bool = False) -> torch.nn.Module:
    """The model of a Mask R-CNN config, without a pretrained backbone, seeded, in train mode.

    Args:
        config_path (str): The config file (:data:`FOCAL_DET_CONFIG`, or mmdet's Swin-T one,
            :func:`swin_det_config_path`). A config of mmfocal's imports mmfocal itself
            (``custom_imports``), which registers the backbones.
        device (str | torch.device): Where the model goes.
        quick (bool): Shrink the model to test size (:func:`shrink_detector`). Defaults to False.
        torchvision_roi_align (bool): Its RoI extractors use torchvision's RoIAlign (mmcv's
            ``RoIAlign(use_torchvision=True)``; mmcv's own has no bf16 kernel). Defaults to False.

    Returns:
        torch.nn.Module: The detector on ``device``, initialised by its ``init_weights``.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config_path)
    cfg.model.backbone.init_cfg = None
    if quick:
        shrink_detector(cfg.model)
    if torchvision_roi_align:
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            cfg.model.roi_head[extractor].roi_layer.use_torchvision = True
    torch.manual_seed(0)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    try:
        model = MODELS.build(cfg.model)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.to(device).train()


def shrink_detector(model, channels: int = 16) -> None:
    """Shrink a Mask R-CNN model config to test size, in place.

    Args:
        model (ConfigDict): The config's ``model``; it gets the tiny backbone
            (:data:`~mmfocal.benchmarking.parity.TINY_BACKBONE`), a neck and heads ``channels``
            wide, 50 proposals and 32 sampled RoIs per image.
        channels (int): Width of the neck and heads. Defaults to 16.
    """
    model.backbone.pop('arch', None)
    model.backbone.update(TINY_BACKBONE)
    model.neck.update(in_channels=[TINY_BACKBONE['embed_dims'] * 2**i for i in range(4)], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = roi_head.mask_roi_extractor.out_channels = channels
    roi_head.bbox_head.update(in_channels=channels, fc_out_channels=channels)
    roi_head.mask_head.update(in_channels=channels, conv_out_channels=channels)
    model.train_cfg.rpn_proposal.max_per_img = 50
    model.train_cfg.rcnn.sampler.num = 32


def synthetic_det_batch(size: Sequence[int], count: int = 2) -> dict:
    """A detection batch of synthetic images, each with three boxes and their masks.

    Args:
        size (Sequence[int]): The images' (H, W).
        count (int): The number of images. Defaults to 2.

    Returns:
        dict: ``inputs`` (uint8 tensors, shape (3, H, W)) and ``data_samples`` (mmdet
        ``DetDataSample``), as a detector's ``data_preprocessor`` takes them.
    """
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = size
    inputs, samples = [], []
    for i in range(count):
        generator = torch.Generator().manual_seed(i)
        image = torch.randint(0, 60, (3, h, w), dtype=torch.uint8, generator=generator)
        boxes = torch.tensor([[0.1, 0.2, 0.4, 0.7], [0.5, 0.1, 0.9, 0.5], [0.3 + 0.1 * i, 0.5, 0.8, 0.95]])
        boxes = boxes * torch.tensor([w, h, w, h])
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[k, y0:y1, x0:x1] = 1
            image[:, y0:y1, x0:x1] = 80 + 50 * k
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 2, 3]),
                                           masks=BitmapMasks(masks.numpy(), h, w))
        inputs.append(image)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """Autocast to ``dtype`` on ``device``'s type.

    Args:
        device (torch.device): The device whose type autocast is for.
        dtype (torch.dtype, optional): The autocast dtype; None: no autocast.

    Returns:
        ContextManager: ``torch.autocast``, or a context that does nothing.
    """
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def training_iteration(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
                       dtype: Optional[torch.dtype] = None, scaler=None) -> Tuple[float, bool]:
    """One training iteration: forward with losses, backward, optimizer step.

    Args:
        model (torch.nn.Module): An mmdet detector.
        batch (dict): A batch as :func:`synthetic_det_batch` makes it.
        optimizer (torch.optim.Optimizer): The optimizer of ``model``'s parameters.
        dtype (torch.dtype, optional): Autocast dtype; None: float32. Defaults to None.
        scaler (torch.amp.GradScaler, optional): Loss scaling (fp16, as ``tools/train.py --amp``
            trains); its skipped steps and scale updates are as in training. Defaults to None.

    Returns:
        tuple[float, bool]: The loss and whether every gradient is finite.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(next(model.parameters()).device, dtype):
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach()), finite


def time_iteration(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
                   dtype: Optional[torch.dtype], scaler) -> float:
    """Seconds of one :func:`training_iteration`: CUDA events on a GPU, else wall time.

    Args:
        model (torch.nn.Module): An mmdet detector.
        batch (dict): A batch as :func:`synthetic_det_batch` makes it.
        optimizer (torch.optim.Optimizer): The optimizer of ``model``'s parameters.
        dtype (torch.dtype, optional): Autocast dtype; None: float32.
        scaler (torch.amp.GradScaler, optional): Loss scaling, as in :func:`training_iteration`.

    Returns:
        float: The iteration's seconds.
    """
    if next(model.parameters()).is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        training_iteration(model, batch, optimizer, dtype, scaler)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    training_iteration(model, batch, optimizer, dtype, scaler)
    return time.perf_counter() - begin
