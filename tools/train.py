"""Train a detector (mmdet config) or a segmenter (mmseg config) with a Focal Transformer backbone.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

The same command line as mmdet's and mmseg's own tools/train.py. The config's ``default_scope``
('mmdet' or 'mmseg') decides which library runs it. Without a GPU, distributed runs
(tools/dist_train.sh, --launcher pytorch|slurm) use the gloo backend on CPU.
"""
import argparse
import logging
import os
import os.path as osp
import subprocess

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner

# Registers FocalTransformer with mmdet and mmseg, and makes checkpoints load as data only
# (torch's weights_only) and be written atomically, which --resume relies on.
import mmfocal  # noqa: F401,E402
from mmfocal.atomic_checkpoint import find_latest_complete_checkpoint  # noqa: E402

SCOPES = ('mmdet', 'mmseg')
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def load_config(path, cfg_options, launcher):
    """Read CONFIG, apply --cfg-options, and set the registry scope the config belongs to."""
    if not osp.isfile(path):
        raise SystemExit(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise SystemExit(
            f'{path}: default_scope is {scope!r}; these tools run mmdet configs '
            f"(default_scope='mmdet') and mmseg configs (default_scope='mmseg'). Inherit the "
            "library's default_runtime.py, as every config under configs/ does.")
    init_default_scope(scope)
    cfg.launcher = launcher
    return cfg


def set_work_dir(cfg, config_path, work_dir):
    """--work-dir, else the config's work_dir, else work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def _slurm_environment():
    """torch.distributed's env:// variables from SLURM's, as mmengine's slurm launcher derives
    them (the first node of the allocation hosts the rendezvous)."""
    node_list = os.environ['SLURM_NODELIST']
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {node_list} | head -n1').strip()
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _replace_sync_bn(node):
    """SyncBN layers only run on GPUs; on CPU each process normalises its own batch (BN)."""
    replaced = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            replaced += 1
        for value in node.values():
            replaced += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            replaced += _replace_sync_bn(value)
    return replaced


def prepare_cpu_distributed(cfg):
    """Make a distributed run work where torch has no GPU: gloo instead of nccl, and no GPU
    device ids for DistributedDataParallel.

    mmengine's launchers call ``torch.cuda.set_device`` before creating the process group, which
    fails without CUDA, so the group is created here (mmengine then sees it and skips its own);
    and mmengine gives DDP ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU model.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher not in ('pytorch', 'slurm'):
        raise SystemExit(f'--launcher {cfg.launcher} needs GPUs here; on CPU use '
                         '--launcher pytorch (tools/dist_train.sh) or slurm')
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log(f"no GPU: distributed backend {dist_cfg.get('backend', 'nccl')} -> gloo",
                  logger='current')
    dist_cfg['backend'] = 'gloo'
    if cfg.launcher == 'slurm':
        _slurm_environment()
    if not torch.distributed.is_initialized():
        options = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if 'timeout' in options and not hasattr(options['timeout'], 'total_seconds'):
            from datetime import timedelta
            options['timeout'] = timedelta(seconds=options['timeout'])
        torch.distributed.init_process_group(backend='gloo', **options)
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if _replace_sync_bn(cfg.model):
        print_log('no GPU: SyncBN layers of the model run as BN', logger='current')


def build_runner(cfg):
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a Focal Transformer detector (mmdet config) or segmenter (mmseg config)')
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CHECKPOINT, or without a path from the newest complete checkpoint of '
        'the work dir (iteration, optimizer, lr schedule and logged history included)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    return parse_with_shared_arguments(parser)


def parse_with_shared_arguments(parser):
    """Add the options train.py and test.py share (config overrides, launcher) and parse."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, KEY=VALUE (e.g. train_cfg.max_iters=100 '
        'model.backbone.init_cfg=None); lists as key="[a,b]"')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (older: --local_rank); torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    set_work_dir(cfg, args.config, args.work_dir)

    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit("--amp: mmengine's AmpOptimWrapper trains on GPUs (or NPU/MLU/MUSA) "
                             'only; on CPU train without --amp')
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config', logger='current',
                      level=logging.WARNING)
        elif wrapper_type != 'OptimWrapper':
            raise SystemExit(f'--amp needs optim_wrapper.type OptimWrapper, not {wrapper_type}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit(f'--auto-scale-lr: {args.config} has no auto_scale_lr.base_batch_size '
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
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume: checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    else:
        cfg.resume = False

    prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
