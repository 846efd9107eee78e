"""Export a detector's or segmenter's tensor graph (or its backbone) to ONNX.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint CKPT] --out FILE
        [--part backbone|features|model] [--shape H W] [--batch N] [--dynamic] [--opset N]
        [--dynamo] [--verify] [--cfg-options KEY=VALUE ...]

Without --checkpoint the model is exported as initialised (random weights; nothing downloaded).
--part backbone: the backbone's multi-scale maps; features: backbone and neck; model (default):
model(inputs, mode='tensor'), i.e. a one-stage detector's raw head outputs or a segmenter's
logits (two-stage detectors: use features). --dynamic makes batch, height and width dynamic.
--dynamo uses the torch.export-based exporter (opset >= 18). --verify runs the file in ONNX
Runtime on the example input and prints the largest difference from PyTorch.
"""
import argparse

import torch
from mmengine.config import DictAction

import mmfocal  # noqa: F401
from mmfocal.apis import build_model_from_config
from mmfocal.cli import exit_on_error
from mmfocal.deployment.export import PARTS, ExportedPart, export_onnx, flatten_outputs
from mmfocal.deployment.ort_model import ORTModel
from mmfocal.errors import BadArgumentError, ConfigError


def parse_args():
    parser = argparse.ArgumentParser(description='Export an mmdet/mmseg model of this project to ONNX')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights (default: the randomly initialised model)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--part', choices=PARTS, default='model')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=(800, 1344),
                        help='example input height and width (default 800 1344)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--dynamic', action='store_true', help='dynamic batch, height and width')
    parser.add_argument('--opset', type=int, help='ONNX opset (default 17; 18 with --dynamo)')
    parser.add_argument('--dynamo', action='store_true', help='torch.export-based exporter')
    parser.add_argument('--verify', action='store_true',
                        help='compare ONNX Runtime with PyTorch on the example input')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random example input')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    return parser.parse_args()


@exit_on_error
def main():
    args = parse_args()
    if args.batch < 1 or min(args.shape) < 1:
        raise BadArgumentError(f'--batch and --shape must be positive, got {args.batch} and {args.shape}')
    try:
        model = build_model_from_config(args.config, args.checkpoint, args.cfg_options)
        module = ExportedPart(model, args.part)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from None
    channels = getattr(model.backbone, 'in_channels', 3)
    example = torch.randn(args.batch, channels, *args.shape, generator=torch.Generator().manual_seed(args.seed))
    outputs = export_onnx(module, example, args.out, dynamic=args.dynamic, opset=args.opset,
                          dynamo=args.dynamo, part=args.part)
    print(f'{args.part} of {args.config} exported to {args.out} '
          f'({"dynamic batch, height and width" if args.dynamic else "fixed input size"}); '
          f'input inputs: {[args.batch, channels, *args.shape]}')
    for name, shape in outputs:
        print(f'  output {name}: {shape}')
    if args.verify:
        with torch.no_grad():
            expected, _ = flatten_outputs(module(example))
        got, _ = flatten_outputs(ORTModel(args.out)(example))
        error = max((e - g).abs().max().item() for e, g in zip(expected, got))
        print(f'ONNX Runtime vs PyTorch at {tuple(example.shape)}: max abs difference {error:.3g}')


if __name__ == '__main__':
    main()
