"""Evaluate a config's val/test set with the exported part of the model run by ONNX Runtime.

    python tools/deployment/onnx_test.py CONFIG CHECKPOINT ONNX_FILE [--work-dir DIR]
        [--cfg-options KEY=VALUE ...]

Everything around the ONNX file is what tools/test.py runs: the config's data pipeline and data
preprocessor, mmdet's / mmseg's own post-processing (box decoding and NMS, RPN and RoI heads of
two-stage detectors, resizing of segmentation logits) and the config's test evaluator. The file
(from tools/deployment/pytorch2onnx.py) replaces the part it was exported from: the backbone,
backbone and neck (``--part features``), or the tensor graph (``--part model``). CHECKPOINT gives
the weights of what stays in PyTorch; it must be the checkpoint the file was exported from.
"""
import argparse

import mmfocal  # noqa: F401
from mmfocal.apis import load_config
from mmfocal.cli import build_runner, check_dataset_paths, exit_on_error, parse_with_shared_arguments, set_work_dir
from mmfocal.deployment.ort_model import ORTModel, run_part_with_onnxruntime
from mmfocal.engine.checkpoint_files import check_checkpoint_file
from mmfocal.errors import BadArgumentError


def parse_args():
    parser = argparse.ArgumentParser(description='Evaluate with ONNX Runtime (CPU) in place of a model part')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='the checkpoint the ONNX file was exported from')
    parser.add_argument('onnx_file')
    parser.add_argument('--work-dir', help='where the log and metrics go')
    return parse_with_shared_arguments(parser)


@exit_on_error
def main():
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    check_checkpoint_file(args.onnx_file, 'ONNX file')
    cfg = load_config(args.config, args.cfg_options, 'none')
    set_work_dir(cfg, args.config, args.work_dir)
    check_dataset_paths(cfg, args.config, phases=('test', ))  # as tools/test.py, before anything is built
    cfg.load_from = args.checkpoint
    try:
        ort_model = ORTModel(args.onnx_file)
    except ValueError as error:
        raise BadArgumentError(str(error)) from None
    runner = build_runner(cfg)
    run_part_with_onnxruntime(runner.model, ort_model)
    metrics = runner.test()
    print(f'\nResults of {args.onnx_file} ({ort_model.part} in ONNX Runtime) with {args.checkpoint} '
          f'on {args.config}:')
    for key, value in metrics.items():
        print(f'  {key}: {value}')


if __name__ == '__main__':
    main()
