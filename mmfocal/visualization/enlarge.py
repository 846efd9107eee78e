"""Draw small pictures larger: the image and everything drawn on it, scaled by a whole factor.

mmdet's and mmseg's visualizers draw at the image's own size, so on the demo's 128-pixel pictures
the class labels come out 8 pixels high. Scaling the image *and* its ground truth and predictions
up before the library visualizer draws them keeps the drawing the library's own, with the text,
lines and mask outlines at a readable size.
"""
import math
from typing import Tuple

import numpy as np
import torch

# Pictures smaller than this on their longer side are drawn enlarged (the demo's 128 px: 4x).
MIN_DRAWN_SIZE = 512


def enlargement(image_shape: Tuple[int, ...], min_size: int = MIN_DRAWN_SIZE) -> int:
    """The whole factor that brings an image's longer side to at least ``min_size``.

    Args:
        image_shape (tuple[int, ...]): The image's shape, (H, W, ...).
        min_size (int): The least longer side to draw. Defaults to :data:`MIN_DRAWN_SIZE`.

    Returns:
        int: The factor; 1 draws the image as it is.
    """
    longest = max(image_shape[:2])
    return max(1, math.ceil(min_size / max(1, longest)))


def _repeat(array, factor: int):
    """Nearest-neighbour upscaling of the last two axes (tensor or ndarray)."""
    if isinstance(array, torch.Tensor):
        return array.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    return np.repeat(np.repeat(array, factor, -2), factor, -1)


def _enlarged_instances(instances, factor: int):
    """A copy of an InstanceData with its boxes and masks ``factor`` times larger."""
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    instances = instances.clone()  # a new container; the fields below are replaced, not changed
    if 'bboxes' in instances:
        boxes = instances.bboxes
        if isinstance(boxes, BaseBoxes):
            boxes = boxes.clone()
            boxes.rescale_((factor, factor))
        else:
            boxes = boxes * factor
        instances.bboxes = boxes
    if 'masks' in instances:
        masks = instances.masks
        if isinstance(masks, (BitmapMasks, PolygonMasks)):
            masks = masks.rescale(factor)
        else:
            masks = _repeat(masks, factor)
        instances.masks = masks
    return instances


def enlarge_sample(image: np.ndarray, data_sample, factor: int):
    """An image and what is drawn on it, enlarged by a whole factor.

    Args:
        image (np.ndarray): The image, shape (H, W, C).
        data_sample (DetDataSample | SegDataSample): Its ground truth and predictions: boxes and
            masks of a DetDataSample, label maps of a SegDataSample.
        factor (int): The enlargement.

    Returns:
        tuple: The image (factor * H, factor * W, C) and a copy of ``data_sample`` to match
        (both as given where ``factor`` is 1).
    """
    import mmcv
    if factor == 1:
        return image, data_sample
    height, width = image.shape[:2]
    image = mmcv.imresize(image, (width * factor, height * factor), interpolation='bicubic')
    data_sample = data_sample.clone()  # shallow: every field drawn is replaced below
    for field in ('gt_instances', 'pred_instances'):
        if field in data_sample:
            setattr(data_sample, field, _enlarged_instances(getattr(data_sample, field), factor))
    for field in ('gt_sem_seg', 'pred_sem_seg', 'gt_depth_map', 'pred_depth_map'):
        if field in data_sample:
            pixels = getattr(data_sample, field)
            setattr(data_sample, field, type(pixels)(metainfo=pixels.metainfo, data=_repeat(pixels.data, factor)))
    return image, data_sample
