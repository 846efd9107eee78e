"""Draw what focal attention looks at: one query token's window, fine keys and pooled keys, on the image.

    python tools/analysis/focal_attention_map.py CONFIG IMAGE --point X Y [--checkpoint CKPT]
        [--stage S] [--block B] [--out FILE.png] [--cfg-options KEY=VALUE ...]

CONFIG is a detection (mmdet) or segmentation (mmseg) config with a Focal backbone; IMAGE goes
through its test pipeline. (X, Y) are pixels of IMAGE; the query is the stage-S token under them.
Without --checkpoint the model is randomly initialised (the title says so). The weights drawn are
those the attention layer recorded in the real forward pass (``record_attention``), one panel
per key level (window tokens, rolled neighbours, pooled levels; mean over heads) and one per head.
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

import mmfocal  # noqa: F401  registers the backbones
from mmfocal.analysis.record_attention import prepare_input, record_query
from mmfocal.apis import build_model_from_config
from mmfocal.cli import exit_on_error
from mmfocal.visualization.attention_map import draw_attention_map


def parse_args():
    parser = argparse.ArgumentParser(description='Draw the focal attention of one query token on an image')
    parser.add_argument('config', help='mmdet or mmseg config with a Focal backbone')
    parser.add_argument('image', help='picture to run the model on')
    parser.add_argument('--point', nargs=2, type=float, required=True, metavar=('X', 'Y'),
                        help='the query, in pixels of IMAGE')
    parser.add_argument('--checkpoint', help='trained weights (default: random initialisation)')
    parser.add_argument('--stage', type=int, default=0, help='backbone stage, from 0 (default 0)')
    parser.add_argument('--block', type=int, default=0, help='block of that stage, from 0 (default 0)')
    parser.add_argument('--out', default='focal_attention.png', help='PNG to write')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    return parser.parse_args()


def _count(n, noun):
    return f'{n} {noun}' + ('s' if n != 1 else '')


@exit_on_error
def main():
    args = parse_args()
    model = build_model_from_config(args.config, args.checkpoint, args.cfg_options)
    inputs, image, metainfo = prepare_input(model, model.cfg, args.image)
    query = record_query(model, inputs, image, metainfo, args.stage, args.block, args.point)
    keys = query.keys
    weights = 'random init (no checkpoint)' if args.checkpoint is None else osp.basename(args.checkpoint)
    title = (f'{osp.basename(args.config)}, {weights}: stage {args.stage} block {args.block}, '
             f'{_count(keys.weights.shape[0], "head")}\nquery at pixel ({args.point[0]:g}, {args.point[1]:g}) '
             f'= token (row {keys.query[0]}, col {keys.query[1]}) of a {keys.map_size[0]}x{keys.map_size[1]} '
             f'map ({query.stride} px per token), window {keys.window[2]}x{keys.window[2]}')
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    draw_attention_map(keys, image, query.stride, title, point=query.point, out_file=args.out)
    shares = ', '.join(f'{group.name} {share:.3f}' for group, share in zip(keys.groups, keys.mass_per_group()))
    print(f'weight per level (mean over heads): {shares}')
    print(f'attention map (PNG): {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
