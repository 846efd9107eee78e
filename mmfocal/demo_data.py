"""The demo data sets: a COCO-format instance-segmentation set, an ADE20K-format semantic
segmentation set and an ImageNet-format classification set of coloured shapes, made on the spot
(deterministically, in seconds) rather than downloaded.

tools/make_demo_data.py is the command line; make_coco_split, make_ade_split and
make_imagenet_split write one split each. Layout written under the output folder:

    coco/annotations/instances_{train,val}.json   COCO instances, masks as uncompressed RLE
    coco/{train,val}/*.jpg
    ade/images/{training,validation}/*.jpg        ADE20K layout, as mmseg's ADE20KDataset reads it
    ade/annotations/{training,validation}/*.png   uint8 labels: 0 = unlabelled, 1.. = the classes
    imagenet/{train,val}/<class>/*.jpg            ImageNet layout, as mmpretrain's ImageNet reads it:
    imagenet/meta/{train,val}.txt                 "<class>/<file> <label>" lines
    imagenet/meta/{train,val}_colours.txt         "<class>/<file> <hue> <typical>" lines

Every picture is a mildly noisy, softly shaded background, darkened, with bright filled shapes on
it (HSV value 200-255): every outline is an edge of one sign in brightness, whatever the hues.
The shape decides the class (circle, square, triangle, cross); size, rotation, position and hue
are random. Each class has a typical hue (red circles, blue squares, green triangles, yellow
crosses, each within +-20 degrees):

- detection and segmentation (--typical-colour 0.75): three objects in four have their class's
  typical hue, the rest any hue, so colour is a cue, as with real object classes, but not the
  answer: a model has to learn shape too (--typical-colour 0 makes colour say nothing; from
  scratch on 2 CPU cores shape alone is learnt slowly, and the demo's segmenter collapsed to one
  shape class);
- classification (--cls-typical-colour 0): hue drawn whatever the class, so shape is the only
  cue, the one that transfers to the detector; one whole shape per picture (--cls-train /
  --cls-val per class), within the detection set's sizes in pixels, in smaller pictures
  (--cls-scale): the demo's stand-in for ImageNet pretraining. Its colour list gives each
  picture's hue and whether that is its class's typical one (the demo scores the others apart).

In the detection and segmentation sets objects overlap: a later shape hides part of an earlier
one, and the earlier one's mask and box are those of what stays visible (objects left mostly
hidden are dropped), as in COCO.

The segmentation labels follow ADE20K's convention: label 0 is "other / unlabelled" and is
ignored once `reduce_zero_label` shifts it to 255; classes are 1..N on disk (0..N-1 after the
shift). Here 0 marks the one-pixel anti-aliased rim around each shape, where the true class is
ambiguous, and 'background' is a class of its own, so a segmenter is scored on it too.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

DET_CLASSES = ('circle', 'square', 'triangle', 'cross')
SEG_CLASSES = ('background', ) + DET_CLASSES

# Like real object classes, each shape has a typical colour (OpenCV hue, 0-180: red circles,
# blue squares, green triangles, yellow crosses) that a share of its objects have.
CLASS_HUES = (0, 115, 60, 28)
HUE_SPREAD = 10
# The shares: 3 in 4 in the detection and segmentation sets (colour a cue, shape decides); none in
# the classification set, so that the classifier learns shape, the cue that transfers (one trained
# where 3 shapes in 4 had their typical hue learned colour alone: 98% top-1 on those, 23% on the
# others).
TYPICAL_COLOUR = 0.75
CLS_TYPICAL_COLOUR = 0.0
# Without colour, shape must be learnt fast enough for the demo's few minutes of CPU. Measured
# (docs/demo.md): shapes of any hue on backgrounds of any muted colour give edges of either sign
# in every channel, and neither the demo transformer nor a small CNN got off chance in a few
# hundred iterations; bright shapes on darkened backgrounds (edges of one sign in brightness,
# whatever the hues) are learnt, so every set is drawn so. The classification set's shapes are
# whole and 22-45 pixels across in 64-pixel pictures.
CLS_SIZES = (0.35, 0.7)  # of --cls-scale
CLS_MARGIN = 0.5
BRIGHT_BACKGROUND = 0.45  # the background's brightness factor
BRIGHT_VALUE = 200  # and the shapes' least HSV value

# Drawing happens at this factor of the final resolution, then is shrunk with area averaging:
# edges come out anti-aliased, like a photograph's, rather than staircased.
SUPERSAMPLE = 4


def shape_polygon(kind, center, size, angle):
    """Outline of one shape as an (N, 2) float array; ``size`` is its width before rotation."""
    if kind == 'circle':
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * (size / 2)
    elif kind == 'square':
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * (size / 2)
    elif kind == 'triangle':
        t = np.deg2rad([-90, 30, 150])
        # Scaled so the triangle's area is close to the square's of the same size.
        pts = np.stack([np.cos(t), np.sin(t)], 1) * (size * 0.62)
    elif kind == 'cross':
        a, b = size / 2, size / 6
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]], float)
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {DET_CLASSES}')
    if kind != 'circle':
        c, s = np.cos(angle), np.sin(angle)
        pts = pts @ np.array([[c, s], [-s, c]])
    return pts + np.asarray(center, float)


def object_colour(rng, cls, typical_colour, avoid, min_value=120):
    """A saturated colour at least a clear step away from the background colour: with
    probability ``typical_colour`` near the class's typical hue, otherwise any hue; its HSV value
    (brightness) at least ``min_value``.

    Returns the colour (BGR) and its hue (OpenCV's 0-180)."""
    typical = rng.random() < typical_colour
    while True:
        if typical:
            hue = (CLASS_HUES[cls] + rng.integers(-HUE_SPREAD, HUE_SPREAD + 1)) % 180
        else:
            hue = rng.integers(0, 180)
        hsv = np.array([[[hue, rng.integers(140, 256), rng.integers(min_value, 256)]]], np.uint8)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(float)
        if np.abs(colour - avoid).sum() > 120:
            return colour, int(hue)


def is_typical_hue(cls, hue):
    """Whether ``hue`` is within the class's typical range (CLASS_HUES +- HUE_SPREAD, on the
    hue circle)."""
    distance = abs(int(hue) - CLASS_HUES[cls]) % 180
    return min(distance, 180 - distance) <= HUE_SPREAD


def background(rng, height, width, brightness=1.0):
    """A muted base colour (times ``brightness``) with a gentle linear shading and speckle noise."""
    base = rng.uniform(60, 190, size=3) * brightness
    gy, gx = np.mgrid[0:height, 0:width].astype(float)
    direction = rng.normal(size=2)
    ramp = (gx * direction[0] / width + gy * direction[1] / height)
    img = base[None, None, :] + 25 * brightness * ramp[..., None]
    img += rng.normal(0, 8 * brightness, size=(height, width, 3))
    return img, base


def draw_scene(rng, height, width, max_objects, size_range, typical_colour=TYPICAL_COLOUR,
               classes=None, margin=0.3):
    """Render one picture: 1 to ``max_objects`` shapes of random classes, or one shape of each
    class listed in ``classes`` (class indices), in that order; each shape's centre at least
    ``margin`` times its size from the edges (0.3: partly outside at times); bright shapes on a
    darkened background.

    Returns the image (uint8 BGR), the class index and the hue (OpenCV's 0-180) of every drawn
    shape, each shape's coverage of every pixel (num_shapes x H x W, in [0, 1], occlusion
    applied) and the indices of the shapes visible enough to annotate, in drawing order."""
    # Bright shapes on a darkened background: every outline is an edge of one sign in brightness,
    # whatever the two hues.
    img, base = background(rng, height, width, BRIGHT_BACKGROUND)
    chosen = classes
    num = int(rng.integers(1, max_objects + 1)) if chosen is None else len(chosen)
    # Each pixel belongs to the topmost shape covering it: an id map drawn at supersampled
    # resolution does the occlusion bookkeeping.
    hi_h, hi_w = height * SUPERSAMPLE, width * SUPERSAMPLE
    owner = np.zeros((hi_h, hi_w), np.int16)
    colours, hues, classes, full_areas = [], [], [], []
    for obj_id in range(1, num + 1):
        cls = int(rng.integers(len(DET_CLASSES))) if chosen is None else int(chosen[obj_id - 1])
        size = rng.uniform(*size_range)
        edge = size * margin
        center = (rng.uniform(edge, width - edge), rng.uniform(edge, height - edge))
        pts = shape_polygon(DET_CLASSES[cls], center, size, rng.uniform(0, 2 * np.pi))
        canvas = np.zeros((hi_h, hi_w), np.uint8)
        cv2.fillPoly(canvas, [np.round(pts * SUPERSAMPLE).astype(np.int32)], 1)
        owner[canvas > 0] = obj_id
        colour, hue = object_colour(rng, cls, typical_colour, base, BRIGHT_VALUE)
        colours.append(colour)
        hues.append(hue)
        classes.append(cls)
        full_areas.append(int(canvas.sum()))
    coverage = np.stack([(owner == i).astype(np.float32) for i in range(1, num + 1)])
    visible_hi = coverage.reshape(num, -1).sum(1)
    coverage = coverage.reshape(num, height, SUPERSAMPLE, width, SUPERSAMPLE).mean((2, 4))
    for i in range(num):
        # A little per-object brightness offset and pixel noise: shapes are not flat stickers.
        texture = (colours[i][None, None, :] + rng.normal(0, 6)
                   + rng.normal(0, 5, size=(height, width, 3)))
        img = img * (1 - coverage[i][..., None]) + texture * coverage[i][..., None]
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    # Objects more than 60% hidden, or too small to see, are not annotated: nobody could outline
    # them either.
    annotated = [i for i in range(num)
                 if visible_hi[i] >= 0.4 * full_areas[i] and (coverage[i] >= 0.5).sum() >= 12]
    return image, classes, hues, coverage, annotated


def uncompressed_rle(mask):
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = np.asfortranarray(mask).reshape(-1, order='F').astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def image_size(rng, scale):
    """Pictures vary a little in size and aspect, as real ones do."""
    width = int(rng.integers(int(scale * 0.85), int(scale * 1.15) + 1))
    height = int(rng.integers(int(scale * 0.75), int(scale * 1.0) + 1))
    return height, width


def write_image(path, image):
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f'could not write {path}')


def make_coco_split(out_dir, split, num_images, seed, scale, typical_colour=TYPICAL_COLOUR):
    img_dir = osp.join(out_dir, 'coco', split)
    ann_dir = osp.join(out_dir, 'coco', 'annotations')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        # One generator per picture: any picture can be remade alone, and the split's pictures do
        # not depend on how many came before.
        rng = np.random.default_rng([seed, 0 if split == 'train' else 1, index])
        height, width = image_size(rng, scale)
        image, classes, _, coverage, annotated = draw_scene(
            rng, height, width, max_objects=6, size_range=(0.12 * scale, 0.45 * scale),
            typical_colour=typical_colour)
        file_name = f'{index:06d}.jpg'
        write_image(osp.join(img_dir, file_name), image)
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for i in annotated:
            cls, mask = classes[i], coverage[i] >= 0.5
            ys, xs = np.nonzero(mask)
            x0, y0 = int(xs.min()), int(ys.min())
            bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=cls + 1,
                     bbox=bbox, area=int(mask.sum()), iscrowd=0,
                     segmentation=uncompressed_rle(mask)))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(DET_CLASSES)]
    coco = dict(info=dict(description=f'mmfocal demo shapes, {split}', version='1.0'),
                licenses=[], images=images, annotations=annotations, categories=categories)
    with open(osp.join(ann_dir, f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f, separators=(',', ':'))
    return len(images), len(annotations)


def make_ade_split(out_dir, split, num_images, seed, scale, typical_colour=TYPICAL_COLOUR):
    img_dir = osp.join(out_dir, 'ade', 'images', split)
    ann_dir = osp.join(out_dir, 'ade', 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for index in range(num_images):
        rng = np.random.default_rng([seed, 2 if split == 'training' else 3, index])
        height, width = image_size(rng, scale)
        image, classes, _, coverage, _ = draw_scene(
            rng, height, width, max_objects=6, size_range=(0.15 * scale, 0.5 * scale),
            typical_colour=typical_colour)
        # How much of each pixel every class covers, background (1) first, then the shapes (2..).
        class_cover = np.zeros((1 + len(DET_CLASSES), height, width), np.float32)
        class_cover[0] = 1 - coverage.sum(0)
        for cls, cover in zip(classes, coverage):
            class_cover[1 + cls] += cover
        label = (class_cover.argmax(0) + 1).astype(np.uint8)
        # Anti-aliased rims, partly one class and partly another, are ambiguous: 0, ADE20K's
        # "other", which reduce_zero_label turns into the ignored 255.
        label[class_cover.max(0) < 0.98] = 0
        stem = f'ADE_{"train" if split == "training" else "val"}_{index:08d}'
        write_image(osp.join(img_dir, stem + '.jpg'), image)
        if not cv2.imwrite(osp.join(ann_dir, stem + '.png'), label):
            raise OSError(f'could not write {stem}.png')
    return num_images


def make_imagenet_split(out_dir, split, per_class, seed, scale, typical_colour=CLS_TYPICAL_COLOUR):
    """One shape per picture, ``per_class`` pictures of each class, in ImageNet's layout:
    ``imagenet/{split}/<class>/<class>_<index>.jpg`` and ``imagenet/meta/{split}.txt`` (one
    "<class>/<file> <label>" line per picture, labels in DET_CLASSES' order, which mmpretrain's
    ImageNet dataset reads when it is there, as for the real ImageNet), and beside it
    ``imagenet/meta/{split}_colours.txt``: "<class>/<file> <hue> <typical>" per picture, the
    shape's hue (OpenCV's 0-180) and 1 where that is its class's typical hue, else 0."""
    root = osp.join(out_dir, 'imagenet')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    lines, colour_lines = [], []
    for label, name in enumerate(DET_CLASSES):
        os.makedirs(osp.join(root, split, name), exist_ok=True)
        for index in range(per_class):
            rng = np.random.default_rng([seed, 4 if split == 'train' else 5, label, index])
            height, width = image_size(rng, scale)
            # Objects within the detection set's sizes (15-58 pixels at the default scales), whole,
            # bright on a dark background, here in pictures of 64 pixels rather than 128.
            image, _, (hue, ), _, _ = draw_scene(rng, height, width, max_objects=1,
                                                 size_range=(CLS_SIZES[0] * scale, CLS_SIZES[1] * scale),
                                                 typical_colour=typical_colour, classes=[label],
                                                 margin=CLS_MARGIN)
            file_name = f'{name}/{name}_{index:05d}.jpg'
            write_image(osp.join(root, split, file_name), image)
            lines.append(f'{file_name} {label}\n')
            colour_lines.append(f'{file_name} {hue} {int(is_typical_hue(label, hue))}\n')
    for path, content in ((f'{split}.txt', lines), (f'{split}_colours.txt', colour_lines)):
        with open(osp.join(root, 'meta', path), 'w') as f:
            f.writelines(content)
    return len(lines)
