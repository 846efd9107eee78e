"""Train a detector (mmdet config), a segmenter (mmseg config) or an ImageNet classifier (mmpretrain
config) with a Focal Transformer backbone.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--no-exact-resume] [--cfg-options KEY=VALUE ...]
        [--launcher none|pytorch|slurm|mpi]

The same command line as mmdet's, mmseg's and mmpretrain's own tools/train.py. The config's
``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain') decides which library runs it. A classifier's
checkpoint (backbone.*, head.fc.*) is what every detection and segmentation config's backbone
takes as init_cfg=dict(type='Pretrained', checkpoint=...), as it takes an official file. Without a
GPU, distributed runs (tools/dist_train.sh, --launcher pytorch|slurm) use the gloo backend on CPU.

Training runs with mmfocal's ExactResumeHook: checkpoints carry every process's random state, and
a run resumed from one continues as the uninterrupted run would have (--no-exact-resume: without).
"""
import argparse
import logging
import os.path as osp

import torch
from mmengine.logging import print_log

# Registers the project's modules with mmdet, mmseg and mmpretrain, and makes checkpoints load as
# data only (mmfocal's own unpickler) and be written atomically, which --resume relies on.
import mmfocal  # noqa: F401
from mmfocal.apis import load_config
from mmfocal.cli import (
    build_runner,
    check_dataset_paths,
    check_pretrained_checkpoint,
    end_distributed,
    exit_on_error,
    parse_with_shared_arguments,
    prepare_cpu_distributed,
    set_work_dir,
)
from mmfocal.engine.atomic_checkpoint import find_latest_complete_checkpoint, remove_interrupted_writes
from mmfocal.engine.checkpoint_files import check_checkpoint_file
from mmfocal.engine.exact_resume import disable_exact_resume, enable_exact_resume
from mmfocal.errors import ConfigError


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a Focal Transformer detector (mmdet config), segmenter (mmseg config) or '
        'classifier (mmpretrain config)')
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CHECKPOINT, or without a path from the newest complete checkpoint of '
        'the work dir (iteration, optimizer, lr schedule and logged history included)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument(
        '--no-exact-resume', action='store_true',
        help="train without ExactResumeHook (also when the config names it): checkpoints don't carry "
        'the random states, and a resumed run continues as mmengine resumes, not exactly')
    return parse_with_shared_arguments(parser)


@exit_on_error
def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    set_work_dir(cfg, args.config, args.work_dir)
    # Before anything is built: the backbone's local checkpoint, then the data sets.
    check_pretrained_checkpoint(cfg)
    check_dataset_paths(cfg, args.config)
    if args.no_exact_resume:
        disable_exact_resume(cfg)
    else:
        enable_exact_resume(cfg)

    if args.amp:
        if not torch.cuda.is_available():
            raise ConfigError("--amp: mmengine's AmpOptimWrapper trains on GPUs (or NPU/MLU/MUSA) "
                             'only; on CPU train without --amp')
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config', logger='current',
                      level=logging.WARNING)
        elif wrapper_type != 'OptimWrapper':
            raise ConfigError(f'--amp needs optim_wrapper.type OptimWrapper, not {wrapper_type}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ConfigError(f'--auto-scale-lr: {args.config} has no auto_scale_lr.base_batch_size '
                             '(the total batch size its lr is meant for)')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        checkpoint = find_latest_complete_checkpoint(cfg.work_dir)
        if checkpoint is None:
            print_log(f'--resume: no complete checkpoint in {cfg.work_dir}; '
                      'training from the start', logger='current', level=logging.WARNING)
            cfg.resume = False
        else:
            cfg.resume, cfg.load_from = True, checkpoint
    elif args.resume is not None:
        check_checkpoint_file(args.resume, '--resume: checkpoint')
        cfg.resume, cfg.load_from = True, args.resume
    else:
        cfg.resume = False
    if cfg.resume:
        # What writes killed with the interrupted run left: its work dir's, and those beside the
        # checkpoint (CheckpointHook's out_dir may put them elsewhere).
        for directory in dict.fromkeys(osp.realpath(path) for path in (cfg.work_dir, osp.dirname(cfg.load_from))):
            remove_interrupted_writes(directory)

    prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()
    end_distributed()


if __name__ == '__main__':
    main()
