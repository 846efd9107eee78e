"""tools/make_demo_data.py (mmfocal.demo_data): deterministic, and what it writes is COCO /
ADE20K / ImageNet as mmdet, mmseg and mmpretrain read them."""
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmfocal.demo_data as shapes

from .helpers import CLS_CONFIGS, make_demo_data, run_tool
from .helpers import DET_DEMO_CONFIG as DET_CONFIG
from .helpers import SEG_DEMO_CONFIG as SEG_CONFIG

CLS_CONFIG = osp.join(CLS_CONFIGS, 'focal_t_demo.py')
# More pictures than the session's demo workspace has: these tests look at the data set itself.
SMALL = ['--det-train', '24', '--det-val', '6', '--seg-train', '8', '--seg-val', '4', '--cls-train', '3',
         '--cls-val', '2']
CLASSES = ('circle', 'square', 'triangle', 'cross')


def make_data(out, *extra):
    make_demo_data(str(out), *SMALL, *extra)
    return out


def tree_digest(root):
    """Relative path -> sha1 of the bytes, for every file under root."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                digests[osp.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return digests


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp('demo'))


def test_same_seed_same_bytes_other_seed_other_pictures(demo_data, tmp_path):
    again = tree_digest(make_data(tmp_path / 'again'))
    first = tree_digest(demo_data)
    assert first == again
    pictures = 2 + 24 + 6 + 2 * (8 + 4) + 4 * (3 + 2)
    assert len(first) == pictures + 4  # and the classification set's lists of pictures and colours
    other = tree_digest(make_data(tmp_path / 'other', '--seed', '1'))
    assert other.keys() == first.keys()
    changed = [k for k in first if first[k] != other[k]]
    # Every file but the lists of the classification pictures, which name the same files (the
    # colours of those pictures differ).
    assert sorted(set(first) - set(changed)) == ['imagenet/meta/train.txt', 'imagenet/meta/val.txt']


@pytest.mark.parametrize('option, value, message', [
    ('--det-val', '0', '--det-val must be at least 1'),
    ('--typical-colour', '1.5', '--typical-colour must be between 0 and 1'),
    ('--cls-typical-colour', '-0.1', '--cls-typical-colour must be between 0 and 1'),
    ('--cls-train', '0', '--cls-train must be at least 1'),
])
def test_bad_arguments_are_refused(tmp_path, option, value, message):
    code, output = run_tool('make_demo_data.py', '--out', tmp_path, option, value, check=False)
    assert code != 0
    assert message in output


def coco_dataset(data_root, split):
    init_default_scope('mmdet')
    from mmdet.registry import DATASETS
    cfg = Config.fromfile(DET_CONFIG)
    dataset_cfg = (cfg.train_dataloader if split == 'train' else cfg.val_dataloader).dataset
    dataset_cfg.data_root = osp.join(data_root, 'coco') + '/'
    return DATASETS.build(dataset_cfg)


def test_coco_loads_through_mmdet_with_real_masks(demo_data):
    from pycocotools import mask as mask_utils
    train = coco_dataset(demo_data, 'train')
    assert train.metainfo['classes'] == ('circle', 'square', 'triangle', 'cross')
    assert 20 <= len(train) <= 24  # pictures whose objects are all hidden are filtered out
    sample = train[0]  # through the training pipeline: bboxes, masks, image
    instances = sample['data_samples'].gt_instances
    assert len(instances) >= 1
    assert instances.masks.masks.shape[1:] == tuple(sample['inputs'].shape[1:])

    with open(osp.join(demo_data, 'coco', 'annotations', 'instances_train.json')) as f:
        coco = json.load(f)
    sizes, labels, overlapping_pictures = [], set(), 0
    by_image = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    images = {img['id']: img for img in coco['images']}
    for image_id, anns in by_image.items():
        img = images[image_id]
        boxes = []
        for ann in anns:
            rle = mask_utils.frPyObjects(ann['segmentation'], img['height'], img['width'])
            mask = mask_utils.decode(rle)
            assert mask.shape == (img['height'], img['width'])
            ys, xs = np.nonzero(mask)
            # The box is the visible mask's, and the area is the mask's pixel count.
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(),
                                   ys.max() + 1 - ys.min()]
            assert ann['area'] == mask.sum()
            sizes.append(max(ann['bbox'][2:]))
            labels.add(ann['category_id'])
            boxes.append(ann['bbox'])
        overlapping_pictures += any(
            _boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert labels == {1, 2, 3, 4}
    assert min(sizes) < 25 and max(sizes) > 45  # small and large objects
    assert overlapping_pictures >= 3


def _boxes_overlap(a, b):
    return (min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0])
            and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1]))


def test_coco_val_is_scored_by_coco_metric(demo_data):
    """The val annotations are what CocoMetric scores: ground truth scored against itself is 1."""
    init_default_scope('mmdet')
    from mmdet.evaluation import CocoMetric
    val = coco_dataset(demo_data, 'val')
    metric = CocoMetric(ann_file=osp.join(demo_data, 'coco', 'annotations', 'instances_val.json'),
                        metric=['bbox'])
    metric.dataset_meta = val.metainfo
    import torch
    for index in range(len(val)):
        info = val.get_data_info(index)
        boxes = [inst['bbox'] for inst in info['instances']]
        metric.process({}, [dict(
            img_id=info['img_id'], ori_shape=(info['height'], info['width']),
            pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                scores=torch.ones(len(boxes)),
                                labels=torch.tensor([inst['bbox_label']
                                                     for inst in info['instances']])))])
    results = metric.evaluate(len(val))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)


def test_ade20k_format_loads_through_mmseg(demo_data):
    init_default_scope('mmseg')
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import DATASETS
    ade = osp.join(demo_data, 'ade')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', reduce_zero_label=True)]
    # mmseg's own ADE20KDataset finds every picture and its label map.
    dataset = ADE20KDataset(data_root=ade, pipeline=pipeline,
                            data_prefix=dict(img_path='images/training',
                                             seg_map_path='annotations/training'))
    assert len(dataset) == 8
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        labels = np.unique(sample['gt_seg_map'])
        assert set(labels) <= {0, 1, 2, 3, 4, 255}
        seen |= set(labels)
    # reduce_zero_label: on-disk 0 (shape rims) became 255, background (1) became 0.
    assert {0, 255} <= seen and len(seen - {0, 255}) >= 3

    # The demo config's dataset: the same files under the demo's own class names.
    cfg = Config.fromfile(SEG_CONFIG)
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = ade
    demo = DATASETS.build(dataset_cfg)
    assert len(demo) == 4
    assert demo.metainfo['classes'] == ('background', 'circle', 'square', 'triangle', 'cross')
    assert demo.reduce_zero_label


def test_ade20k_labels_match_the_pictures(demo_data):
    """Raw label maps: background is 1, shapes 2..5, and 0 only on the thin rims of shapes."""
    import cv2
    folder = osp.join(demo_data, 'ade', 'annotations', 'training')
    names = sorted(os.listdir(folder))
    assert len(names) == 8  # SMALL's --seg-train
    for name in names:
        label = cv2.imread(osp.join(folder, name), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.ndim == 2
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 5}
        assert (label == 1).mean() > 0.3
        rim = label == 0
        assert 0 < rim.mean() < 0.15
        # Rims are the edges of shapes: a shape's pixels are within three pixels of each.
        near_shape = cv2.dilate((label >= 2).astype(np.uint8), np.ones((7, 7), np.uint8))
        assert near_shape[rim].all(), name


def decode_rle(segmentation, height, width):
    from pycocotools import mask as mask_utils
    return mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))


def coco_objects(data_root, split='train'):
    """(picture (BGR), visible mask, class index) of every annotated object of the COCO set."""
    import cv2
    with open(osp.join(data_root, 'coco', 'annotations', f'instances_{split}.json')) as f:
        coco = json.load(f)
    images = {img['id']: img for img in coco['images']}
    pictures = {}
    for ann in coco['annotations']:
        img = images[ann['image_id']]
        if img['id'] not in pictures:
            pictures[img['id']] = cv2.imread(osp.join(data_root, 'coco', split, img['file_name']))
        yield pictures[img['id']], decode_rle(ann['segmentation'], img['height'], img['width']), \
            ann['category_id'] - 1


def ade_objects(data_root, split='training'):
    """(picture (BGR), mask, class index) of every shape of the ADE20K-format set: the connected
    regions of each shape label (2..5 on disk)."""
    import cv2
    folder = osp.join(data_root, 'ade', 'annotations', split)
    for name in sorted(os.listdir(folder)):
        label = cv2.imread(osp.join(folder, name), cv2.IMREAD_UNCHANGED)
        picture = cv2.imread(osp.join(data_root, 'ade', 'images', split, name[:-4] + '.jpg'))
        for value in range(2, 2 + len(CLASSES)):
            count, regions = cv2.connectedComponents((label == value).astype(np.uint8))
            for region in range(1, count):
                yield picture, (regions == region).astype(np.uint8), value - 2


def typical_share(objects):
    """The share of objects whose hue (the median over the inside of their mask) is their class's
    typical one, and how many objects were measured."""
    import cv2
    typical = []
    for picture, mask, cls in objects:
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
        if inner.sum() < 10:
            continue
        hue = np.median(cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)[..., 0][inner])
        distance = abs(hue - shapes.CLASS_HUES[cls])
        typical.append(min(distance, 180 - distance) <= shapes.HUE_SPREAD + 4)
    return np.mean(typical), len(typical)


@pytest.mark.parametrize('data_set', ['coco', 'ade'])
def test_colour_is_a_cue_not_the_answer(tmp_path, data_set):
    """In the detection and segmentation sets about three objects in four have their class's
    typical hue, the rest any hue (a typical one by chance 1 time in 9); --typical-colour sets the
    share."""
    objects = coco_objects if data_set == 'coco' else ade_objects
    by_chance = (2 * shapes.HUE_SPREAD + 1) / 180
    more = ['--det-train', '40', '--seg-train', '30']  # about 100 objects each
    share, count = typical_share(objects(make_data(tmp_path / 'default', *more)))
    assert count > 60
    assert abs(share - (0.75 + 0.25 * by_chance)) < 0.12
    # Colour says nothing about the class.
    share, _ = typical_share(objects(make_data(tmp_path / 'free', *more, '--typical-colour', '0')))
    assert abs(share - by_chance) < 0.12


@pytest.mark.parametrize('data_set', ['coco', 'ade'])
def test_detection_and_segmentation_shapes_are_bright_on_dark(demo_data, data_set):
    """As in the classification set (what the demo classifier learned to see): every shape is bright
    (HSV value 200-255 before JPEG) on a background darkened to 0.45 of a muted colour."""
    import cv2
    objects = list(coco_objects(demo_data) if data_set == 'coco' else ade_objects(demo_data))
    inside, outside = [], []
    for picture, mask, _ in objects:
        value = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)[..., 2]
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
        if inner.sum() >= 10:
            inside.append(np.median(value[inner]))
    pictures = {id(picture): picture for picture, _, _ in objects}
    covered = {}
    for picture, mask, _ in objects:
        covered[id(picture)] = covered.get(id(picture), 0) | mask
    for key, picture in pictures.items():
        value = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)[..., 2]
        # Away from every annotated shape (hidden shapes that are not annotated are rare).
        away = ~cv2.dilate(covered[key], np.ones((7, 7), np.uint8)).astype(bool)
        outside.append(np.median(value[away]))
    assert len(inside) > 20 and len(outside) >= 8
    assert min(inside) > 175 and max(outside) < 120


def shape_hue(picture):
    """The hue (OpenCV's 0-180) most of a one-shape picture's strongly coloured pixels have: the
    shape's (its saturation is 140-255; the muted background's is mostly lower)."""
    import cv2
    hsv = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)
    coloured = (hsv[..., 1] >= 140) & (hsv[..., 2] >= 110)
    return int(np.bincount(hsv[..., 0][coloured], minlength=180).argmax())


def test_colour_says_nothing_about_the_class_in_the_classification_set(tmp_path):
    """In the classification set the shape's hue is drawn independently of its class, so reading
    colour gets the class right by chance only: the demo classifier has to learn shape. The
    colour list beside the set (the demo's top-1 on atypical colours) says each picture's hue."""
    import cv2
    make_demo_data(str(tmp_path), '--det-train', '1', '--det-val', '1', '--seg-train', '1', '--seg-val', '1',
                   '--cls-train', '1', '--cls-val', '30')
    root = tmp_path / 'imagenet'
    listed = {}
    with open(root / 'meta' / 'val_colours.txt') as f:
        for line in f:
            name, hue, typical = line.split()
            listed[name] = (int(hue), int(typical))
    assert len(listed) == 4 * 30
    by_colour, agrees = [], []
    for name, (hue, typical) in listed.items():
        label = CLASSES.index(name.split('/')[0])
        measured = shape_hue(cv2.imread(str(root / 'val' / name)))
        agrees.append(min(abs(measured - hue), 180 - abs(measured - hue)) <= 6)
        assert typical == shapes.is_typical_hue(label, hue)
        # Colour's best guess: the class whose typical hue is nearest.
        distances = [min(abs(measured - h), 180 - abs(measured - h)) for h in shapes.CLASS_HUES]
        by_colour.append(int(np.argmin(distances)) == label)
    # (Within 6 of a random hue: 1 picture in 14; small shapes on a strongly coloured background
    # can lose the count.)
    assert np.mean(agrees) > 0.7
    assert np.mean(by_colour) < 0.4  # chance: 0.25 (0.25 +- 0.04 over 120 pictures)
    # Typical hues come by chance too: +-10 of 180 is one hue in 9.
    assert np.mean([typical for _, typical in listed.values()]) < 0.25


def imagenet_dataset(data_root, split):
    """The demo classifier config's dataset (mmpretrain's ImageNet, as in the real ImageNet
    config) on the data under ``data_root``."""
    init_default_scope('mmpretrain')
    from mmpretrain.registry import DATASETS
    cfg = Config.fromfile(CLS_CONFIG)
    dataset_cfg = (cfg.train_dataloader if split == 'train' else cfg.val_dataloader).dataset
    dataset_cfg.data_root = osp.join(data_root, 'imagenet')
    return DATASETS.build(dataset_cfg)


def test_imagenet_format_loads_through_mmpretrain(demo_data):
    """The real ImageNet config's dataset, with the demo's root and classes, finds every picture
    under its class's label, and its pipeline makes the demo's crops."""
    import cv2
    real = Config.fromfile(osp.join(CLS_CONFIGS, 'focal_t_in1k.py')).train_dataloader.dataset
    for split, per_class in (('train', 3), ('val', 2)):
        dataset = imagenet_dataset(demo_data, split)
        assert dataset.__class__.__name__ == real.type == 'ImageNet'
        assert dataset.metainfo['classes'] == CLASSES
        assert len(dataset) == 4 * per_class
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            # ImageNet's layout: <split>/<class folder>/<picture>, labelled by the folder's class.
            folder = osp.basename(osp.dirname(info['img_path']))
            assert osp.basename(osp.dirname(osp.dirname(info['img_path']))) == split
            assert CLASSES[info['gt_label']] == folder
        sample = dataset[len(dataset) - 1]
        assert tuple(sample['inputs'].shape) == (3, 56, 56)
        assert int(sample['data_samples'].gt_label) == 3
    # One whole shape, bright on a darkened background: the picture's bright pixels are the
    # shape's, none on the border.
    picture = cv2.imread(osp.join(demo_data, 'imagenet', 'train', 'cross', 'cross_00000.jpg'))
    bright = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)[..., 2] > 160
    assert 54 <= picture.shape[1] <= 73 and 0.05 < bright.mean() < 0.6
    assert not (bright[0].any() or bright[-1].any() or bright[:, 0].any() or bright[:, -1].any())


def test_demo_detectors_differ_only_in_where_the_backbone_starts():
    """`make demo` compares the detector fine-tuned from the demo classifier with the same detector
    from scratch on the same budget: the two configs differ in the backbone's init_cfg alone, and
    the classifier's backbone is the detector's."""
    from .helpers import DET_CONFIGS
    scratch = Config.fromfile(DET_CONFIG).to_dict()
    pretrained = Config.fromfile(osp.join(DET_CONFIGS, 'mask_rcnn_focal_t_demo_pretrained.py')).to_dict()
    assert scratch['model']['backbone'].pop('init_cfg') is None
    assert pretrained['model']['backbone'].pop('init_cfg')['type'] == 'Pretrained'
    assert pretrained == scratch
    classifier = Config.fromfile(CLS_CONFIG).model.backbone.to_dict()
    assert classifier.pop('out_indices') == (3, )
    # The same backbone; the classifier's few minutes of training go without drop path.
    assert classifier.pop('drop_path_rate') == 0
    detector_backbone = dict(scratch['model']['backbone'])
    detector_backbone.pop('out_indices')
    detector_backbone.pop('drop_path_rate')
    assert classifier == dict(detector_backbone, init_cfg=None)


def test_classifier_scores_atypical_colours_apart(demo_data):
    """The demo classifier's evaluator reports top-1 on the pictures whose colour is not their
    class's typical one beside the overall top-1 (mmfocal's SubsetAccuracy, through mmpretrain's
    registry, reading the colour list beside the val list); a picture the list does not name is
    one clear error."""
    init_default_scope('mmpretrain')
    import torch
    from mmpretrain.evaluation import Accuracy
    from mmpretrain.registry import METRICS
    from mmpretrain.structures import DataSample

    from mmfocal.errors import ConfigError
    evaluators = Config.fromfile(CLS_CONFIG).val_evaluator
    metrics = [METRICS.build(cfg) for cfg in evaluators]
    assert isinstance(metrics[0], Accuracy)
    val = imagenet_dataset(demo_data, 'val')
    with open(osp.join(demo_data, 'imagenet', 'meta', 'val_colours.txt')) as f:
        typical = {line.split()[0]: int(line.split()[2]) for line in f}
    samples = []
    for index in range(len(val)):
        info = val.get_data_info(index)
        name = osp.relpath(info['img_path'], osp.join(demo_data, 'imagenet', 'val'))
        # Right on the typical colours, wrong on the others.
        predicted = info['gt_label'] if typical[name] else (info['gt_label'] + 1) % 4
        sample = DataSample(metainfo=dict(img_path=info['img_path'])).set_gt_label(info['gt_label'])
        samples.append(sample.set_pred_score(torch.eye(4)[predicted]).to_dict())
    for metric in metrics:
        metric.dataset_meta = val.metainfo
        metric.process({}, samples)
    results = {k: v for metric in metrics for k, v in metric.evaluate(len(samples)).items()}
    expected = {'accuracy/top1': pytest.approx(100 * np.mean(list(typical.values()))),
                'colour/top1_atypical': 0.0}
    if any(typical.values()):
        expected['colour/top1_typical'] = 100.0
    assert results == expected

    stranger = dict(samples[0], img_path=osp.join(demo_data, 'imagenet', 'val', 'circle', 'elsewhere.jpg'))
    with pytest.raises(ConfigError, match=r'elsewhere\.jpg: not in .*val_colours\.txt$'):
        metrics[1].process({}, [stranger])
