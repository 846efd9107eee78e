"""Plot learning curves (losses, learning rate, validation metrics against iteration) of one or more runs.

    python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR ...] [--keys KEY ...] [--labels NAME ...]
        [--smooth N] [--title TEXT] [--out FILE.png]

Reads mmengine's ``vis_data/scalars.json`` of each work dir (every timestamped run in it, so a
resumed training reads as one) and overlays the runs, one colour each. --keys takes names or
shell patterns (``'loss*'``, ``'coco/*_mAP'``); by default: the total loss, the learning rate
and every validation metric (but COCO's per-size mAP). Validation lines of epoch-based runs are
placed at the iteration where their epoch ended.
"""
import argparse
import fnmatch
import os
import os.path as osp

from mmfocal.analysis.scalars import default_keys, load_history
from mmfocal.cli import exit_on_error
from mmfocal.errors import BadArgumentError, ConfigError, MissingFileError
from mmfocal.visualization.curves import plot_curves


def parse_args():
    parser = argparse.ArgumentParser(description='Plot learning curves from mmengine scalars.json logs')
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR',
                        help="work dirs (or run folders, or scalars.json files)")
    parser.add_argument('--keys', nargs='+', help="names or patterns of the values to plot (default: "
                        "loss, lr and the validation metrics)")
    parser.add_argument('--labels', nargs='+', help='a legend name per WORK_DIR (default: folder names)')
    parser.add_argument('--smooth', type=int, default=5,
                        help='running mean over this many logged training values (1: none; default 5)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--out', default='curves.png', help='PNG to write')
    return parser.parse_args()


@exit_on_error
def main():
    args = parse_args()
    if args.labels and len(args.labels) != len(args.work_dirs):
        raise BadArgumentError(f'--labels: {len(args.labels)} names for {len(args.work_dirs)} work dirs')
    labels = args.labels or [None] * len(args.work_dirs)
    try:
        histories = [load_history(path, label) for path, label in zip(args.work_dirs, labels)]
    except FileNotFoundError as error:
        raise MissingFileError(str(error)) from None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    available = list(dict.fromkeys(k for h in histories for k in h.keys))
    if args.keys:
        keys = []
        for pattern in args.keys:
            matched = fnmatch.filter(available, pattern)
            if not matched:
                raise BadArgumentError(f'--keys {pattern}: no run logged it; logged: {", ".join(available)}')
            keys += matched
    else:
        keys = default_keys(histories)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    plot_curves(histories, keys, args.out, smooth=args.smooth, title=args.title)
    for history in histories:
        print(f'{history.name}: {len(history.files)} run(s), {", ".join(history.files)}')
    print(f'learning curves (PNG): {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
