"""What the scripts under ``tools/`` share: the one error policy (:func:`exit_on_error`), the
command-line options train and test have in common, the checks of a config's files and data sets
made before anything is built, the work dir, and distributed runs on machines without a GPU.

The tools are thin scripts over the library (:mod:`mmfocal.apis` reads configs and converts
checkpoints) and these functions; they import the installed package, so they run from any working
directory. The checks raise :mod:`mmfocal.errors` exceptions; a tool's ``main``, decorated with
:func:`exit_on_error`, stops with their one-line message."""
import functools
import os
import os.path as osp
import subprocess

import torch
from mmengine.config import ConfigDict, DictAction
from mmengine.dist import barrier, is_distributed
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .engine.checkpoint_files import check_checkpoint_file
from .engine.published_weights import dead_url_advice
from .errors import ConfigError, MissingFileError, MMFocalError

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def exit_on_error(main):
    """Decorate a tool's ``main`` to stop on the package's errors with their one-line message.

    Args:
        main (Callable): The tool's ``main``.

    Returns:
        Callable: ``main``, raising ``SystemExit`` with the message of an
        :class:`~mmfocal.errors.MMFocalError` it raises (the message on stderr, exit status 1,
        no traceback).
    """

    @functools.wraps(main)
    def main_exiting_on_error(*args, **kwargs):
        """Call ``main``; a package error exits with its message.

        Args:
            *args: ``main``'s positional arguments.
            **kwargs: ``main``'s keyword arguments.

        Returns:
            object: What ``main`` returns.
        """
        try:
            return main(*args, **kwargs)
        except MMFocalError as error:
            raise SystemExit(str(error)) from None

    return main_exiting_on_error


def set_work_dir(cfg, config_path, work_dir):
    """Set ``cfg.work_dir``: --work-dir, else the config's own, else ``work_dirs/<config name>``.

    Args:
        cfg (Config): The config, changed in place.
        config_path (str): The config file, whose name names the default work dir.
        work_dir (str, optional): --work-dir.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def check_pretrained_checkpoint(cfg):
    """Check that the backbone's pretrained checkpoint can be had, before anything is built.

    Building the model and the datasets takes minutes for the large models, and would then fail
    at weight initialisation.

    Args:
        cfg (Config): The config; its ``model.backbone.init_cfg`` is checked if it is Pretrained.

    Raises:
        MissingFileError: A local file that is not there, or one of the authors' dead download
            links whose file is not already in the download cache (the line then says where the
            same weights survive, :mod:`mmfocal.engine.published_weights`).
        BadArgumentError: A local path that is no regular file.
    """
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained':
        return
    checkpoint = init_cfg.get('checkpoint')
    if not checkpoint:
        return
    key = 'model.backbone.init_cfg.checkpoint'
    if _is_remote(checkpoint):
        advice = dead_url_advice(checkpoint, key)
        if advice:
            raise MissingFileError(f'{cfg.filename or "the config"}: {advice}')
        return
    if osp.isfile(checkpoint):
        return
    if osp.exists(checkpoint):
        check_checkpoint_file(checkpoint, 'pretrained backbone checkpoint (model.backbone.init_cfg)')
    raise MissingFileError(
        f'pretrained backbone checkpoint not found: {checkpoint} (model.backbone.init_cfg); give '
        f'its path with --cfg-options {key}=PATH (docs/weights.md says where the published weights '
        'survive), or train from scratch with --cfg-options model.backbone.init_cfg=None')


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
    """Make a distributed run work where torch has no GPU: gloo instead of nccl, no GPU device ids for DDP.

    mmengine's launchers call ``torch.cuda.set_device`` before creating the process group, which
    fails without CUDA, so the group is created here (mmengine then sees it and skips its own);
    and mmengine gives DDP ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU model. SyncBN
    layers become BN.

    Args:
        cfg (Config): The config (with ``launcher`` set), changed in place.

    Raises:
        ConfigError: A launcher other than pytorch or slurm without a GPU.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher not in ('pytorch', 'slurm'):
        raise ConfigError(f'--launcher {cfg.launcher} needs GPUs here; on CPU use '
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


def end_distributed():
    """Wait for every process, then destroy the process group, in a distributed run (else a no-op).

    The tools call it when the runner is done. Left to the interpreter's exit, gloo's worker
    threads can still hold work when the group is torn down, and a process then aborts
    ("terminate called without an active exception", pytorch/pytorch#190489) after its training
    finished. The barrier keeps a rank from leaving while the others still work; destroying the
    group ends its threads before the interpreter goes.
    """
    if is_distributed():
        barrier()
        torch.distributed.destroy_process_group()


def build_runner(cfg):
    """The config's runner: its ``runner_type`` from the registry, else mmengine's Runner.

    Args:
        cfg (Config): The config.

    Returns:
        Runner: The runner.
    """
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def parse_with_shared_arguments(parser):
    """Add the options train.py and test.py share (config overrides, launcher) and parse the command line.

    Args:
        parser (argparse.ArgumentParser): The tool's parser, with its own options.

    Returns:
        argparse.Namespace: The arguments (``LOCAL_RANK`` set in the environment if not there).
    """
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


# Where the libraries' own configs expect the data sets, relative to the working directory.
_DATA_SETS = {
    'mmdet': 'COCO 2017 (annotations/, train2017/, val2017/) goes in data/coco/, where mmdet\'s configs read it',
    'mmseg': 'ADE20K (ADEChallengeData2016: images/, annotations/) goes in data/ade/ADEChallengeData2016/, '
             'where mmseg\'s configs read it',
    'mmpretrain': 'ImageNet-1k (train/ and val/, one folder of pictures per class, or with meta/train.txt and '
                  'meta/val.txt listing them) goes in data/imagenet/, where mmpretrain\'s configs read it',
    # By data set type, where one library reads several (the key is the dataset's `type`).
    'ImageNet21k': 'ImageNet-22K (train/, one folder of pictures per class, and meta/train.txt listing them) goes '
                   'in data/imagenet21k/, where mmpretrain\'s ImageNet21k configs read it',
}
_DEMO_DATA = 'data/demo'


def _is_remote(path: str) -> bool:
    """A location a storage backend or mmengine's CheckpointLoader resolves (http://, s3://,
    open-mmlab://, torchvision://, ...), not a local path to check."""
    return '://' in path


def _dataset_paths(dataset_cfg, key):
    """(config key, path) of what a dataset config reads, as mmengine's BaseDataset joins them:
    data_root, then ann_file and data_prefix entries under it unless absolute. Wrappers
    (RepeatDataset, ClassBalancedDataset, ConcatDataset) are followed to the datasets they wrap."""
    if 'dataset' in dataset_cfg:
        yield from _dataset_paths(dataset_cfg['dataset'], f'{key}.dataset')
        return
    if 'datasets' in dataset_cfg:
        for index, inner in enumerate(dataset_cfg['datasets']):
            yield from _dataset_paths(inner, f'{key}.datasets.{index}')
        return
    data_root = dataset_cfg.get('data_root') or ''
    if data_root:
        yield f'{key}.data_root', data_root
    if dataset_cfg.get('ann_file'):
        yield f'{key}.ann_file', osp.join(data_root, dataset_cfg['ann_file'])
    prefixes = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefixes, str):  # mmpretrain: one folder of pictures
        yield f'{key}.data_prefix', osp.join(data_root, prefixes)
    elif dataset_cfg.get('split') and not prefixes:  # mmpretrain's ImageNet: the split names the folder
        yield f'{key}.data_prefix', osp.join(data_root, dataset_cfg['split'])
    for name, prefix in (prefixes if isinstance(prefixes, dict) else {}).items():
        if isinstance(prefix, str) and prefix:
            yield f'{key}.data_prefix.{name}', osp.join(data_root, prefix)


def _innermost(dataset_cfg):
    """The dataset a wrapper (RepeatDataset, ClassBalancedDataset) wraps, or ``dataset_cfg`` itself."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def check_dataset_paths(cfg, config_path, phases=('train', 'val')):
    """Check that the data sets a config reads are where it says, before anything is built.

    The paths are those of the dataloaders' datasets and the evaluators' annotation files
    (``val_evaluator.ann_file`` of a COCO metric), relative ones taken from the working directory
    as mmengine does. URLs (``s3://``, ...) are the storage backend's business and not checked.

    Args:
        cfg (Config): The config.
        config_path (str): The config file, named in the message.
        phases (tuple[str]): The dataloaders to check. Defaults to ('train', 'val').

    Raises:
        MissingFileError: One line naming the missing path and the fix.
    """
    paths = []
    for phase in phases:
        loader = cfg.get(f'{phase}_dataloader')
        if not loader or (phase != 'train' and cfg.get(f'{phase}_cfg', {}) is None):  # dict(): the default loop
            continue
        kind = _innermost(loader.dataset).get('type')
        paths += [(key, path, kind) for key, path in _dataset_paths(loader.dataset, f'{phase}_dataloader.dataset')]
        evaluators = cfg.get(f'{phase}_evaluator') or []
        for index, evaluator in enumerate(evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]):
            if isinstance(evaluator, dict) and evaluator.get('ann_file'):
                key = f'{phase}_evaluator' + (f'.{index}' if isinstance(evaluators, (list, tuple)) else '')
                paths.append((f'{key}.ann_file', evaluator['ann_file'], None))
    for key, path, kind in paths:
        if _is_remote(path) or osp.exists(path):
            continue
        where = f'{path} (under {os.getcwd()})' if not osp.isabs(path) else path
        if (osp.normpath(path) + '/').startswith(_DEMO_DATA + '/'):  # the demo configs' relative paths
            fix = ('make the demo data first: `python tools/make_demo_data.py` (or `make demo`) in the repository, '
                   'and run from there (the demo configs read data/demo/ relative to the working directory)')
        else:
            # The other settings that read from the same place and have to move with it.
            along = [other for other, other_path, _ in paths if other != key and other_path.startswith(path)
                     and other.endswith(('.data_root', '_evaluator.ann_file'))]
            where_it_goes = _DATA_SETS.get(kind) or _DATA_SETS.get(cfg.get('default_scope'), 'put the data set there')
            fix = (f'{where_it_goes}; or point the config '
                   f'at yours with --cfg-options {key}=...' + (f' ({", ".join(along)} too)' if along else ''))
        raise MissingFileError(f'{config_path}: {key} = {where} does not exist: {fix}')
