"""Checkpoints load as data, never as code.

A ``.pth`` file is a pickle, and an unrestricted pickle runs whatever code it names. torch >= 2.6
loads with ``weights_only=True`` by default, which refuses anything outside a small allow-list, and
that breaks mmengine 0.10.7: its own training checkpoints hold numpy arrays and scalars and the
message hub's ``HistoryBuffer`` objects, so ``--resume`` and ``tools/test.py`` fail. Meanwhile
mmengine's URL loader (``init_cfg=dict(type='Pretrained', checkpoint='https://...')``,
``open-mmlab://``, ``torchvision://``) goes through ``torch.hub.load_state_dict_from_url``, whose
``weights_only`` still defaults to False: a downloaded checkpoint runs any code it carries.

:func:`install` (called by ``import mmfocal`` unless ``MMFOCAL_NO_PATCHES=1``; :func:`uninstall`
undoes it) fixes both without ever loading with ``weights_only=False``:

* it allow-lists exactly the types mmengine, mmdet and mmseg put into checkpoints
  (:func:`checkpoint_safe_globals`), found by saving real checkpoints of their runners;
* it replaces mmengine's loaders for local files and http(s) URLs (the latter also serve
  ``open-mmlab://``, ``torchvision://`` and ``mmcls://``) with ones that pass
  ``weights_only=True`` explicitly, so neither a default nor ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
  turns the check off;
* every registered loader reports a refused checkpoint as :class:`UnsafeCheckpointError`, naming
  the file and the refused objects and saying that nothing was executed, and a truncated file as
  :class:`IncompleteCheckpointError`;
* a PaddleViT ``.pdparams`` file (a plain pickle, not a torch file), local or downloaded, is read
  by :mod:`mmfocal.engine.paddle_checkpoint`'s numpy-only unpickler, with the same errors.

All of mmengine's ways in (``init_cfg`` Pretrained, ``load_from``, ``resume``, ``tools/test.py``,
``mmfocal.engine.pretrained.load_pretrained``) go through ``CheckpointLoader.load_checkpoint``, so they
are all covered.
"""
import functools
import os
import os.path as osp
import pickle
import re
import urllib.error
import zipfile
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import broadcast_object_list, get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ['UnsafeCheckpointError', 'IncompleteCheckpointError', 'CheckpointDownloadError', 'checkpoint_safe_globals',
           'install', 'uninstall', 'is_installed', 'load_checkpoint_file', 'load_checkpoint_url',
           'cached_checkpoint_path']

# The only attributes a checkpoint may fetch with ``getattr``: HistoryBuffer pickles its table of
# statistics as ``getattr(HistoryBuffer, 'min')`` and so on (protocol 2 spells a method that way).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds Python objects outside the allow-list; it was refused, not executed."""

    def __init__(self, source: str, refused: List[str], detail: str = '', advice: Optional[str] = None):
        self.source = source
        self.refused = refused
        what = ', '.join(refused) if refused else detail or 'objects that are not checkpoint data'
        advice = advice or (
            'Checkpoints of mmengine, mmdet, mmseg and the official Focal Transformer hold only tensors, '
            'numbers, strings, containers, numpy arrays and mmengine HistoryBuffers, which load. Unpickling '
            'such a file without this check can run arbitrary code, so do not load it with weights_only=False; '
            'if you made it yourself and trust it, allow exactly these objects with '
            'torch.serialization.add_safe_globals([...]) before loading.')
        super().__init__(
            f'refused to load the checkpoint {source}: it holds Python objects that are not checkpoint '
            f'data ({what}). The file was NOT executed: nothing in it ran. {advice}')


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint file is truncated or corrupt (for instance, its writer was killed)."""

    def __init__(self, source: str, detail: str):
        self.source = source
        super().__init__(
            f'{source} is not a complete checkpoint: it is truncated or corrupt ({detail}). A process '
            'killed while writing a checkpoint leaves such a file unless it was written atomically, '
            'as it is with mmfocal imported; to resume, use the newest complete checkpoint '
            '(mmfocal.engine.atomic_checkpoint.find_latest_complete_checkpoint(work_dir)).')


class CheckpointDownloadError(OSError):
    """A checkpoint URL could not be downloaded; the message says how to use a local copy instead."""

    def __init__(self, url: str, cause: Exception):
        self.url = url
        reason = getattr(cause, 'reason', None) or cause
        status = f'HTTP {cause.code}: ' if getattr(cause, 'code', None) else ''
        super().__init__(
            f'could not download the checkpoint {url} ({status}{reason}). Download it by other means, '
            "or get it from someone who has it, and point the config at the local file, e.g. "
            '--cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth')


def _history_buffer_statistic(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling: HistoryBuffer's statistics only."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}): a checkpoint may fetch only HistoryBuffer '
                                 f'statistics {_HISTORY_BUFFER_STATISTICS} with getattr')


class ForeignConfig:
    """Stands in for ``yacs.config.CfgNode`` while unpickling: an OrderedDict of its plain data.

    The official Focal Transformer's training script saves its yacs config beside the weights
    (``checkpoint['config']``); this reads it without importing yacs or running its code. (An
    OrderedDict because torch's weights-only unpickler fills only dict types it knows.)
    """

    def __new__(cls, *args):
        return OrderedDict()


def checkpoint_safe_globals() -> List[Tuple[Callable, str]]:
    """(object, name in the pickle) pairs for the objects mmengine, mmdet and mmseg checkpoints hold.

    Beyond torch's defaults, a Runner checkpoint needs: numpy arrays, dtypes and scalars (dataset
    metainfo, logged values in the message hub) and the message hub's HistoryBuffer with its
    statistic methods. A dtype is rebuilt as an instance of its class in ``numpy.dtypes``
    (Float64DType, Int64DType, ...); which ones a checkpoint holds depends on what was logged, and
    none of them carries code, so all are allowed. numpy 2 writes ``numpy._core`` where numpy 1
    writes ``numpy.core``; both names map to the same functions so checkpoints from either load.
    """
    try:
        from numpy._core import multiarray  # numpy 2, and numpy 1.26's alias of numpy.core
    except ImportError:
        from numpy.core import multiarray
    pairs = [
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
        *[(getattr(np.dtypes, name), f'numpy.dtypes.{name}') for name in np.dtypes.__all__],
        (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_statistic, 'builtins.getattr'),
        (ForeignConfig, 'yacs.config.CfgNode'),
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs += [(multiarray._reconstruct, f'{module}._reconstruct'), (multiarray.scalar, f'{module}.scalar')]
    return pairs


_UNSAFE_GLOBAL_PATTERNS = (re.compile(r'GLOBAL (\S+) was not an allowed global'),
                           re.compile(r'unsupported GLOBAL (\S+) whose module'))


def _refused_globals(message: str, local_file: Optional[str]) -> List[str]:
    """The objects a refused checkpoint names, for the error message.

    From a torch zip file on disk, every one of them: ``get_unsafe_globals_in_checkpoint`` reads
    the pickle's opcodes and imports or calls nothing. It reads zip files only, so for a legacy
    (pre-1.6) file or one that is not on disk the list is what torch's message names, its first
    refused object. If the pickle of a zip file cannot even be scanned, the file is damaged, and
    that is raised as :class:`IncompleteCheckpointError` by the caller.
    """
    found = []
    if local_file is not None and zipfile.is_zipfile(local_file):
        found = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(local_file))
    for pattern in _UNSAFE_GLOBAL_PATTERNS:
        found += [name for name in pattern.findall(message) if name not in found]
    return found


def _refusal_detail(message: str) -> str:
    detail = message.split('WeightsUnpickler error:')[-1].strip()
    return detail.split('\n')[0].split('Check the documentation of torch.load')[0].strip()


def _translate_errors(source: str, local_file: Optional[str]):
    """A decorator for a loader: torch's refusals and read errors become errors naming ``source``.

    ``local_file``, where the bytes are on disk, lets the message list every refused object.
    """

    def decorate(load: Callable):
        @functools.wraps(load)
        def guarded(*args, **kwargs):
            try:
                return load(*args, **kwargs)
            except UnsafeCheckpointError:
                raise
            except pickle.UnpicklingError as error:
                message = str(error)
                try:
                    refused = _refused_globals(message, local_file)
                except Exception as scan_error:  # noqa: BLE001  reported, with its cause
                    raise IncompleteCheckpointError(
                        source, f'its pickle cannot be read: {type(scan_error).__name__}: {scan_error}') from None
                raise UnsafeCheckpointError(source, refused, _refusal_detail(message)) from None
            except (EOFError, RuntimeError) as error:
                if isinstance(error, RuntimeError) and 'PytorchStreamReader' not in str(error):
                    raise
                raise IncompleteCheckpointError(source, str(error).strip() or type(error).__name__) from None

        return guarded

    return decorate


def load_checkpoint_file(filename: str, map_location=None):
    """``torch.load`` of a local file with ``weights_only=True``, with the errors above; a PaddleViT
    ``.pdparams`` file is read as data by :func:`mmfocal.engine.paddle_checkpoint.load_pdparams`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if filename.endswith('.pdparams'):
        from .paddle_checkpoint import load_pdparams  # imported here: it uses this module's errors
        return load_pdparams(filename)
    load = _translate_errors(filename, filename)(torch.load)
    return load(filename, map_location=map_location, weights_only=True)


def cached_checkpoint_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where :func:`load_checkpoint_url` keeps the download of ``url``: ``model_dir``, by default
    torch hub's ``<torch.hub.get_dir()>/checkpoints``, and the URL's file name."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def load_checkpoint_url(url: str, map_location=None, model_dir: Optional[str] = None,
                        progress: bool = os.isatty(0)):
    """Download ``url`` into the torch hub cache (rank 0 first) and load it with ``weights_only=True``."""
    cached_file = cached_checkpoint_path(url, model_dir)
    model_dir = osp.dirname(cached_file)

    @_translate_errors(f'{url} (downloaded to {cached_file})', cached_file)
    def download_and_load():
        try:
            if cached_file.endswith('.pdparams'):  # not a torch file: downloaded, then read as data
                if not osp.isfile(cached_file):
                    os.makedirs(model_dir, exist_ok=True)
                    torch.hub.download_url_to_file(url, cached_file, progress=progress)
                return load_checkpoint_file(cached_file)
            return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, map_location=map_location,
                                                      progress=progress, weights_only=True)
        except urllib.error.URLError as error:  # HTTPError included
            raise CheckpointDownloadError(url, error) from None

    rank, world_size = get_dist_info()
    if world_size == 1:
        return download_and_load()
    # Rank 0 downloads first; the other ranks then load its file from the cache. Rank 0's outcome
    # is broadcast (which every rank waits for, as at a barrier), so a failed download stops every
    # rank with the reason rather than leaving the others waiting for a file that never comes.
    checkpoint, failure = None, None
    if rank == 0:
        try:
            checkpoint = download_and_load()
        except Exception as error:  # noqa: BLE001  raised below, on every rank
            failure = error
    outcome = [None if failure is None else f'{type(failure).__name__}: {failure}']
    broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        raise RuntimeError(f'rank {rank}: not loading {url}, because rank 0 failed to download or load it: '
                           f'{outcome[0]}')
    if rank > 0:
        checkpoint = download_and_load()
    return checkpoint


def _marked_safe(loader: Callable) -> Callable:
    """Tag a loader as ours, so that install() neither wraps it again nor replaces it."""
    loader._mmfocal_safe = True
    return loader


# The names matter: mmengine's CheckpointLoader logs ``loader.__name__[10:]`` as the backend.
@_marked_safe
def load_from_local(filename, map_location=None):
    return load_checkpoint_file(filename, map_location)


@_marked_safe
def load_from_http(filename, map_location=None, model_dir=None, progress=os.isatty(0)):
    return load_checkpoint_url(filename, map_location, model_dir, progress)


def _guard_loader(loader: Callable) -> Callable:
    """Another scheme's loader (pavi, s3, open-mmlab local files, ...), with errors that name the file."""

    @_marked_safe
    @functools.wraps(loader)
    def guarded(filename, *args, **kwargs):
        return _translate_errors(filename, None)(loader)(filename, *args, **kwargs)

    return guarded


# What install() replaced, for uninstall(): the allow-list entries it added (those torch did not
# have yet), mmengine's module-level load_from_http, and each scheme prefix's loader.
_replaced = dict(safe_globals=[], load_from_http=None, schemes={})


def install() -> None:
    """Allow-list checkpoint types and make every mmengine checkpoint loader safe; idempotent.
    :func:`uninstall` puts back what it replaced."""
    present = torch.serialization.get_safe_globals()
    added = [entry for entry in checkpoint_safe_globals() if entry not in present]
    torch.serialization.add_safe_globals(added)
    _replaced['safe_globals'] += added
    # load_from_openmmlab, load_from_torchvision and load_from_mmcls call the module's
    # load_from_http by name, so it has to be replaced there as well as in the registry.
    if not getattr(mmengine_checkpoint.load_from_http, '_mmfocal_safe', False):
        _replaced['load_from_http'] = mmengine_checkpoint.load_from_http
    mmengine_checkpoint.load_from_http = load_from_http
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_mmfocal_safe', False):
            _replaced['schemes'][prefix] = loader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_mmfocal_safe', False):
            CheckpointLoader.register_scheme(prefixes=prefix, loader=_guard_loader(loader), force=True)


def uninstall() -> None:
    """Undo :func:`install`: torch's allow-list without the entries install added, and mmengine's
    own loaders back in its CheckpointLoader and module; idempotent. Loading is then what torch and
    mmengine do by themselves (with torch >= 2.6, mmengine's training checkpoints are refused by
    torch's default ``weights_only=True``, and URLs are unpickled without restriction)."""
    if _replaced['safe_globals']:
        remaining = [entry for entry in torch.serialization.get_safe_globals()
                     if entry not in _replaced['safe_globals']]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(remaining)
        _replaced['safe_globals'] = []
    if _replaced['load_from_http'] is not None:
        mmengine_checkpoint.load_from_http = _replaced['load_from_http']
        _replaced['load_from_http'] = None
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if getattr(loader, '_mmfocal_safe', False):
            if prefix in _replaced['schemes']:
                CheckpointLoader.register_scheme(prefixes=prefix, loader=_replaced['schemes'][prefix], force=True)
            else:  # a loader registered after install() and wrapped by a later install()
                CheckpointLoader.register_scheme(prefixes=prefix, loader=loader.__wrapped__, force=True)
    _replaced['schemes'] = {}


def is_installed() -> bool:
    """Whether :func:`install` is in effect (every registered loader is one of ours)."""
    return all(getattr(loader, '_mmfocal_safe', False) for loader in CheckpointLoader._schemes.values()) and \
        getattr(mmengine_checkpoint.load_from_http, '_mmfocal_safe', False)
