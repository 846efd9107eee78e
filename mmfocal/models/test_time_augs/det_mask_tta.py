"""Test-time augmentation for instance segmentation: mmdet's DetTTAModel merges boxes and drops
masks (mmdet 3.3 has no mask TTA), so an HTC or Mask R-CNN evaluated with ``--tta`` would lose its
mask mAP. This model merges the views' detections the same way and keeps, for every detection
that survives the merge, the mask its own view predicted."""
from typing import List

import torch
from mmcv.ops import batched_nms
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

_FLIP_DIMS = {'horizontal': (-1, ), 'vertical': (-2, ), 'diagonal': (-2, -1)}


def unflip_masks(masks: torch.Tensor, metainfo: dict) -> torch.Tensor:
    """The masks of a view, its flip undone.

    Args:
        masks (torch.Tensor): The view's masks at the original image size, shape (N, H, W).
        metainfo (dict): The view's metainfo: ``flip`` and ``flip_direction`` (``'horizontal'``,
            ``'vertical'`` or ``'diagonal'``).

    Returns:
        torch.Tensor: The masks as the unflipped image has them, shape (N, H, W).
    """
    if not metainfo.get('flip', False):
        return masks
    direction = metainfo.get('flip_direction', 'horizontal')
    if direction not in _FLIP_DIMS:
        raise ValueError(f'cannot undo a {direction!r} flip; expected one of {sorted(_FLIP_DIMS)}')
    return masks.flip(_FLIP_DIMS[direction])


class DetMaskTTAModel(DetTTAModel):
    """Merges the views of one image into one prediction with boxes, scores, labels and masks.

    The views' boxes (flips undone) are merged by ``tta_cfg.nms`` per class (NMS or soft-NMS),
    the best ``tta_cfg.max_per_img`` kept; each kept detection brings the (N, H, W) mask its view
    predicted at the original image size (the detectors' ``rescale=True`` output), flipped back.
    Views must predict masks; a view without them is an error, not a box-only result.

    Each view runs with ``flip=False`` in its metainfo, its flip restored for the merge: mmdet
    3.3's HTC mask prediction reads ``flip`` and undoes it on a tensor with a numpy slice (a
    ValueError), a leftover of mmdet 2's test-time augmentation; a view's stages need no flip.

    Args:
        module (dict | nn.Module): The detector each view runs through (mmengine's
            ``BaseTTAModel``).
        tta_cfg (dict, optional): ``nms`` (mmcv's ``batched_nms`` config: NMS or soft-NMS) and
            ``max_per_img``, as mmdet's ``DetTTAModel``. Defaults to None.
    """

    def test_step(self, data: dict) -> list:
        """Each view through the detector, then the views of each image merged.

        Args:
            data (dict): ``inputs`` and ``data_samples``, one list per view.

        Returns:
            list[DetDataSample]: One merged prediction per image.
        """
        flips = [[(s.metainfo.get('flip', False), s.metainfo.get('flip_direction')) for s in view_samples]
                 for view_samples in data['data_samples']]
        for view_samples in data['data_samples']:
            for sample in view_samples:
                sample.set_metainfo(dict(flip=False))
        try:
            views = [self.module.test_step(dict(inputs=inputs, data_samples=samples))
                     for inputs, samples in zip(data['inputs'], data['data_samples'])]
        finally:
            for view_samples, view_flips in zip(data['data_samples'], flips):
                for sample, (flip, direction) in zip(view_samples, view_flips):
                    sample.set_metainfo(dict(flip=flip, flip_direction=direction))
        for predictions, view_flips in zip(views, flips):
            for prediction, (flip, direction) in zip(predictions, view_flips):
                prediction.set_metainfo(dict(flip=flip, flip_direction=direction))
        return self.merge_preds(list(zip(*views)))

    def _merge_single_sample(self, data_samples: List[DetDataSample]) -> DetDataSample:
        bboxes, scores, labels, masks = [], [], [], []
        for sample in data_samples:
            pred = sample.pred_instances
            if 'masks' not in pred:
                raise ValueError('DetMaskTTAModel merges instance masks, but a view predicted none; '
                                 "use mmdet's DetTTAModel for a box-only detector")
            bboxes.append(pred.bboxes)
            scores.append(pred.scores)
            labels.append(pred.labels)
            masks.append(unflip_masks(pred.masks, sample.metainfo))
        bboxes, scores = self.merge_aug_bboxes(bboxes, scores, [s.metainfo for s in data_samples])
        labels, masks = torch.cat(labels), torch.cat(masks)

        merged = InstanceData()
        if len(bboxes) == 0:
            merged.bboxes, merged.scores, merged.labels, merged.masks = bboxes, scores, labels, masks
        else:
            dets, keep = batched_nms(bboxes, scores, labels, self.tta_cfg.nms)
            dets, keep = dets[:self.tta_cfg.max_per_img], keep[:self.tta_cfg.max_per_img]
            # soft-NMS decays scores, so the scores come from `dets`, not from the views.
            merged.bboxes, merged.scores = dets[:, :-1], dets[:, -1]
            merged.labels, merged.masks = labels[keep], masks[keep]
        result = data_samples[0]
        result.pred_instances = merged
        return result
