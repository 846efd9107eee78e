"""Run a detector's or segmenter's backbone on one image and keep one block's attention weights.

The model is built from an mmdet or mmseg config (:func:`mmfocal.apis.build_model_from_config`:
random weights, or a checkpoint), the image goes through the config's own test pipeline and the
model's data preprocessor, exactly as in testing, and the chosen block's attention layer records
its softmax weights during that forward pass (``record_attention``): the weights drawn are the
model's own, not recomputed. Bad arguments raise :mod:`mmfocal.errors` exceptions.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch

from ..errors import BadArgumentError, MissingFileError
from .focal_keys import QueryKeys, query_keys


@dataclass
class RecordedQuery:
    """One query's keys and weights, and what it takes to draw them on the image.

    Attributes:
        keys (QueryKeys): The query's keys and weights.
        image (np.ndarray): RGB uint8, shape (H, W, 3), resized as the model saw it (without
            batch padding).
        stride (int): Input pixels per stage-map token.
        point (tuple[float, float]): The query (x, y) in input pixels.
        scale_factor (tuple[float, float]): Input pixels per original pixel, (x, y).
    """
    keys: QueryKeys
    image: np.ndarray
    stride: int
    point: Tuple[float, float]
    scale_factor: Tuple[float, float]


def _test_pipeline(cfg):
    """The config's test pipeline without annotation loading (an arbitrary image has none)."""
    from mmengine.dataset import Compose
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset.dataset
    steps = [step for step in dataset.pipeline if not str(step['type']).endswith('LoadAnnotations')]
    return Compose(steps)


def prepare_input(model, cfg, image_path: str):
    """One image as the model sees it in testing.

    Args:
        model (nn.Module): The detector or segmentor (its data preprocessor is used).
        cfg (Config): Its config (its test pipeline is used, without annotation loading).
        image_path (str): The image file.

    Returns:
        tuple: The model's input batch of one (1, 3, H, W), the resized image as RGB uint8
        (H, W, 3), and its metainfo.

    Raises:
        MissingFileError: The image is not there.
    """
    from mmengine.dataset import pseudo_collate
    if not osp.isfile(image_path):
        raise MissingFileError(f'image not found: {image_path}')
    packed = _test_pipeline(cfg)(dict(img_path=image_path, img_id=0))
    image = packed['inputs'].permute(1, 2, 0).numpy()[..., ::-1].copy()  # BGR (mmcv) -> RGB
    with torch.no_grad():
        data = model.data_preprocessor(pseudo_collate([packed]), False)
    return data['inputs'], image, data['data_samples'][0].metainfo


def attention_layer(backbone, stage: int, block: int):
    """A block of a Focal backbone and its attention layer.

    Args:
        backbone (nn.Module): A Focal backbone.
        stage (int): The stage, from 0.
        block (int): The block of the stage, from 0.

    Returns:
        tuple[nn.Module, nn.Module]: The block and its attention layer (the module with
        ``record_attention``).

    Raises:
        BadArgumentError: No such stage or block, or not a Focal backbone.
    """
    stages = getattr(backbone, 'layers', None)
    if stages is None:
        raise BadArgumentError(f'{type(backbone).__name__} has no stages (.layers): not a Focal backbone')
    if not 0 <= stage < len(stages):
        raise BadArgumentError(f'--stage {stage}: the backbone has stages 0..{len(stages) - 1}')
    blocks = stages[stage].blocks
    if not 0 <= block < len(blocks):
        raise BadArgumentError(f'--block {block}: stage {stage} has blocks 0..{len(blocks) - 1}')
    for module in blocks[block].modules():
        if hasattr(module, 'record_attention'):
            return blocks[block], module
    raise BadArgumentError(f'stage {stage} block {block} has no attention layer that records its weights')


def token_stride(backbone, stage: int) -> int:
    """Input pixels per token of a stage: the stem's stride, doubled per stage.

    Args:
        backbone (nn.Module): A Focal Transformer backbone.
        stage (int): The stage, from 0.

    Returns:
        int: The stage's stride in input pixels.
    """
    return int(backbone.patch_embed.stride) * 2**stage


def record_query(model, inputs: torch.Tensor, image: np.ndarray, metainfo: dict, stage: int, block: int,
                 point: Sequence[float]) -> RecordedQuery:
    """One query's attention in a forward pass of the backbone.

    Args:
        model (nn.Module): The detector or segmentor.
        inputs (torch.Tensor): Its input batch of one, from :func:`prepare_input`.
        image (np.ndarray): The resized image, from :func:`prepare_input`.
        metainfo (dict): Its metainfo, from :func:`prepare_input`.
        stage (int): The stage of the recording block.
        block (int): The block of the stage.
        point (Sequence[float]): (x, y) in the original image's pixels; the query is the stage
            token under it.

    Returns:
        RecordedQuery: The query's keys and weights, and the image to draw them on.

    Raises:
        BadArgumentError: The point is off the image, or no such stage or block.
    """
    x, y = point
    ori_h, ori_w = metainfo['ori_shape'][:2]
    if not (0 <= x < ori_w and 0 <= y < ori_h):
        raise BadArgumentError(f'--point {x:g} {y:g} is outside the {ori_w}x{ori_h} image')
    scale_x, scale_y = (float(s) for s in np.broadcast_to(metainfo.get('scale_factor', (1.0, 1.0)), (2, )))
    block_module, attention = attention_layer(model.backbone, stage, block)
    map_size = {}

    def note_map_size(module, args):  # the block's input (B, H, W, C): the map before padding
        """Keep the block's first input map size: the map before padding.

        Args:
            module (nn.Module): The block (a forward pre-hook's first argument).
            args (tuple): The block's positional inputs; the first is shape (B, H, W, C).
        """
        map_size.setdefault('hw', tuple(args[0].shape[1:3]))

    hook = block_module.register_forward_pre_hook(note_map_size)
    attention.record_attention, attention.recorded = True, None
    try:
        with torch.no_grad():
            model.backbone(inputs)
    finally:
        attention.record_attention = False
        hook.remove()
    stride = token_stride(model.backbone, stage)
    px, py = x * scale_x, y * scale_y
    keys = query_keys(attention, map_size['hw'], int(py // stride), int(px // stride))
    attention.recorded = None
    return RecordedQuery(keys, image, stride, (px, py), (scale_x, scale_y))
