"""Parameters and FLOPs of the model a detection or segmentation config builds.

    python tools/get_flops.py configs/det/mask_rcnn_focal_t_1x.py
    python tools/get_flops.py CONFIG --shape 800 1333 --cfg-options model.backbone.arch=small

The input is one synthetic 3xHxW image: 800x1280 (HxW) for detection and 512x2048 for a config
whose default_scope is mmseg, the sizes the paper quotes FLOPs at; ``--shape H W`` overrides.
What is counted, and how (a multiply-add is one FLOP, attention included, cascade mask heads on
100 RoIs as mmdet 2 did): :mod:`mmfocal.analysis.flops`, whose :func:`complexity` this prints.
No pretrained weights are loaded: the model has mmdet's/mmseg's own initialisation.
"""
import argparse
from typing import Dict, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

import mmfocal  # noqa: F401  registers FocalTransformer in mmdet's and mmseg's MODELS
from mmfocal.analysis.flops import complexity
from mmfocal.cli import exit_on_error
from mmfocal.errors import ConfigError


def format_line(config: str, result: Dict) -> str:
    height, width = result['shape']
    return (f'{config}: params {result["params"] / 1e6:.2f} M, FLOPs {result["flops"] / 1e9:.1f} G '
            f'at input 3x{height}x{width} (HxW)')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default 800 1280 for detection, 512 2048 '
                        'for segmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (as tools/train.py)')
    return parser.parse_args(argv)


@exit_on_error
def main(argv: Optional[Sequence[str]] = None) -> Tuple[str, Dict]:
    args = parse_args(argv)
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        result = complexity(cfg, args.shape)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f'get_flops: {error}') from error
    line = format_line(args.config, result)
    print(line)
    if result['mask_rois'] and result['mask_rois'][0] != result['mask_rois'][1]:
        print('  cascade mask heads counted on {1} of the {0} RoIs they ran on, as mmdet 2 did '
              '(see mmfocal/analysis/flops.py)'.format(*result['mask_rois']))
    if result['unsupported_ops']:
        skipped = ', '.join(f'{op} x{n}' for op, n in sorted(result['unsupported_ops'].items()))
        print(f'  not counted (no FLOP formula in mmengine): {skipped}')
    return line, result


if __name__ == '__main__':
    main()
