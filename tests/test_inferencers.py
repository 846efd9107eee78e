"""One-image inference with the libraries' own inferencers on our configs, as README shows it:
mmdet's DetInferencer, mmseg's MMSegInferencer and mmpretrain's ImageClassificationInferencer, each
given a config path and a checkpoint (the demo configs' models with their own random
initialisation, saved with the data set's classes as tools/train.py's checkpoints carry them)."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch

from mmfocal.apis import build_model_from_config

from .helpers import CLS_CONFIGS, DET_DEMO_CONFIG, SEG_DEMO_CONFIG


def random_checkpoint(config: str, path: str) -> str:
    """A checkpoint of ``config``'s model with its own initialisation, and the data set's classes
    (and palette) in its meta, where the inferencers read them."""
    model = build_model_from_config(config)
    dataset = model.cfg.test_dataloader.dataset
    meta = dict(dataset_meta=dict(dataset.get('metainfo') or {}))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


@pytest.fixture(scope='module')
def picture(demo_workspace):
    """One of the demo detection pictures (96 pixels)."""
    return sorted(glob.glob(str(demo_workspace / 'data' / 'demo' / 'coco' / '**' / '*.jpg'), recursive=True))[0]


def test_det_inferencer(picture, tmp_path):
    from mmdet.apis import DetInferencer
    checkpoint = random_checkpoint(DET_DEMO_CONFIG, str(tmp_path / 'det.pth'))
    inferencer = DetInferencer(model=DET_DEMO_CONFIG, weights=checkpoint, device='cpu')
    result = inferencer(picture, out_dir=str(tmp_path / 'out'), no_save_pred=False)
    (prediction, ) = result['predictions']
    count = len(prediction['labels'])
    assert len(prediction['scores']) == len(prediction['bboxes']) == len(prediction['masks']) == count
    assert all(len(box) == 4 for box in prediction['bboxes'])
    assert all(0 <= label < 4 for label in prediction['labels'])  # the demo's four shapes
    assert osp.isfile(tmp_path / 'out' / 'vis' / osp.basename(picture))


def test_seg_inferencer(picture, tmp_path):
    from mmseg.apis import MMSegInferencer
    checkpoint = random_checkpoint(SEG_DEMO_CONFIG, str(tmp_path / 'seg.pth'))
    inferencer = MMSegInferencer(model=SEG_DEMO_CONFIG, weights=checkpoint, device='cpu')
    result = inferencer(picture, return_vis=True)
    height, width = np.asarray(result['visualization']).shape[:2]
    labels = np.asarray(result['predictions'])
    assert labels.shape == (height, width) and labels.min() >= 0 and labels.max() < 5  # 5 demo classes
    assert inferencer.model.dataset_meta['classes'][1] == 'circle'


def test_classification_inferencer(picture, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    config = osp.join(CLS_CONFIGS, 'focal_t_demo.py')
    checkpoint = random_checkpoint(config, str(tmp_path / 'cls.pth'))
    inferencer = ImageClassificationInferencer(model=config, pretrained=checkpoint, device='cpu')
    (prediction, ) = inferencer(picture)
    scores = prediction['pred_scores']
    assert scores.ndim == 1 and abs(scores.sum() - 1) < 1e-5
    assert prediction['pred_label'] == int(scores.argmax()) and prediction['pred_score'] == scores.max()
    assert prediction['pred_class'] == inferencer.classes[prediction['pred_label']]
