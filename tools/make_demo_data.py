"""Write the demo data sets (mmfocal.demo_data): COCO-format instance segmentation, ADE20K-format
semantic segmentation and ImageNet-format classification sets of coloured shapes, made on the
spot (deterministically, in seconds) rather than downloaded.

    python tools/make_demo_data.py [--out data/demo] [--seed 0] [--scale 128]
        [--typical-colour 0.75] [--det-train 600] [--det-val 100] [--seg-train 400]
        [--seg-val 100] [--cls-typical-colour 0] [--cls-scale 64] [--cls-train 400] [--cls-val 50]

What the sets hold, and why they are drawn so: mmfocal/demo_data.py and docs/demo.md.
"""
import argparse
import os.path as osp

from mmfocal.cli import exit_on_error
from mmfocal.demo_data import (
    CLS_TYPICAL_COLOUR,
    TYPICAL_COLOUR,
    make_ade_split,
    make_coco_split,
    make_imagenet_split,
)
from mmfocal.errors import BadArgumentError


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/demo', help='output folder')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--scale', type=int, default=128,
                        help='nominal picture width in pixels (sizes vary around it)')
    parser.add_argument('--typical-colour', type=float, default=TYPICAL_COLOUR,
                        help='detection and segmentation sets: share of objects in their class\'s '
                        'typical colour (0: colour says nothing about the class)')
    parser.add_argument('--cls-typical-colour', type=float, default=CLS_TYPICAL_COLOUR,
                        help='the same for the classification set (default 0: hue independent of '
                        'the class)')
    parser.add_argument('--det-train', type=int, default=600)
    parser.add_argument('--det-val', type=int, default=100)
    parser.add_argument('--seg-train', type=int, default=400)
    parser.add_argument('--seg-val', type=int, default=100)
    parser.add_argument('--cls-scale', type=int, default=64,
                        help='nominal width of the classification pictures in pixels')
    parser.add_argument('--cls-train', type=int, default=400,
                        help='classification training pictures per class')
    parser.add_argument('--cls-val', type=int, default=50,
                        help='classification validation pictures per class')
    return parser.parse_args()


@exit_on_error
def main():
    args = parse_args()
    for name in ('typical_colour', 'cls_typical_colour'):
        if not 0 <= getattr(args, name) <= 1:
            raise BadArgumentError(f'--{name.replace("_", "-")} must be between 0 and 1')
    for name in ('det_train', 'det_val', 'seg_train', 'seg_val', 'cls_train', 'cls_val'):
        if getattr(args, name) < 1:
            raise BadArgumentError(f'--{name.replace("_", "-")} must be at least 1')
    for split, num in (('train', args.det_train), ('val', args.det_val)):
        n_img, n_ann = make_coco_split(args.out, split, num, args.seed, args.scale,
                                       args.typical_colour)
        print(f'coco {split}: {n_img} images, {n_ann} objects '
              f'-> {osp.join(args.out, "coco")}')
    for split, num in (('training', args.seg_train), ('validation', args.seg_val)):
        make_ade_split(args.out, split, num, args.seed, args.scale, args.typical_colour)
        print(f'ade {split}: {num} images -> {osp.join(args.out, "ade")}')
    for split, num in (('train', args.cls_train), ('val', args.cls_val)):
        total = make_imagenet_split(args.out, split, num, args.seed, args.cls_scale,
                                    args.cls_typical_colour)
        print(f'imagenet {split}: {total} images ({num} per class) -> {osp.join(args.out, "imagenet")}')


if __name__ == '__main__':
    main()
