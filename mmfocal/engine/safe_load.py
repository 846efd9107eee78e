"""Checkpoints load as data, never as code, and a hostile file cannot harm the process.

A ``.pth`` file is a pickle, and an unrestricted pickle runs whatever code it names. torch's own
``weights_only=True`` refuses mmengine 0.10.7's training checkpoints (numpy arrays and scalars,
the message hub's ``HistoryBuffer``; torch < 2.4 cannot even be told about them), and allowing
numpy in torch's process-wide allow-list lets any ``torch.load`` in the process build object
dtypes and stride-0 arrays (memory corruption, memory bombs). mmengine's URL loader
(``init_cfg=dict(type='Pretrained', checkpoint='https://...')``, ``open-mmlab://``,
``torchvision://``) unpickles a download without any restriction.

So every checkpoint mmfocal's loaders read is unpickled by the project's own
:class:`~mmfocal.engine.data_unpickler.DataUnpickler`, given to ``torch.load`` as its
``pickle_module`` (on every torch version; torch's allow-list is left as it is). It resolves
tensors, torch dtypes and sizes, plain containers, HistoryBuffer and the yacs config stand-in,
and numpy arrays, dtypes and scalars through checked builders; anything else is refused before
it is created. :func:`install` (called by ``import mmfocal`` unless ``MMFOCAL_NO_PATCHES=1``;
:func:`uninstall` undoes it) registers these loaders for local files and http(s) URLs in
mmengine's ``CheckpointLoader`` (the latter also serve ``open-mmlab://``, ``torchvision://`` and
``mmcls://``), wraps every other scheme's loader so its errors name the file, and gives mmengine's
checkpoint module a ``torch`` whose ``load`` is ours (its ``pavi://``, ``s3://`` and local
``open-mmlab://`` loaders call ``torch.load`` themselves). Before
unpickling, :func:`load_checkpoint_file` checks that the path is a regular file and that a zip
checkpoint's members pass their CRC; a PaddleViT ``.pdparams`` file (a plain pickle, not a torch
file), local or downloaded, goes to :mod:`mmfocal.engine.pdparams`, which reads it with the same
kind of unpickler.

Every failure is one of the errors of :mod:`mmfocal.engine.checkpoint_files` (all
:class:`~mmfocal.errors.MMFocalError`, and importable from here too), one line naming the file and
what is wrong. All of mmengine's ways in (``init_cfg`` Pretrained,
``load_from``, ``resume``, ``tools/test.py``, ``mmfocal.models.checkpoints.load_pretrained``) go
through ``CheckpointLoader.load_checkpoint``, so they are all covered. docs/checkpoints.md states
the threat model.
"""
import functools
import math
import os
import os.path as osp
import pickle
import tarfile
import types
import urllib.error
import zipfile
from collections import Counter, OrderedDict
from typing import Callable, Optional
from urllib.parse import urlparse

import torch
from mmengine.dist import broadcast_object_list, get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from ..errors import MMFocalError
from .checkpoint_files import (
    CheckpointDownloadError,
    IncompleteCheckpointError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    check_regular_file,
)
from .data_unpickler import NUMPY_GLOBALS, STRING_GLOBALS, Allowed, DataUnpickler, RefusedObject
from .pdparams import is_pdparams, load_pdparams

__all__ = ['UnsafeCheckpointError', 'IncompleteCheckpointError', 'CheckpointDownloadError',
           'UnreadableCheckpointError', 'CHECKPOINT_UNPICKLER', 'install', 'uninstall', 'is_installed',
           'load_checkpoint_file', 'load_checkpoint_url', 'check_regular_file', 'check_zip_members',
           'cached_checkpoint_path']

# The only attributes a checkpoint may fetch with ``getattr``: HistoryBuffer pickles its table of
# statistics as ``getattr(HistoryBuffer, 'min')`` and so on (protocol 2 spells a method that way).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling: HistoryBuffer's statistics only."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise RefusedObject(f'getattr({owner!r}, {name!r})', 'a checkpoint may fetch only HistoryBuffer statistics '
                        f'{_HISTORY_BUFFER_STATISTICS} with getattr')


class ForeignConfig:
    """Stands in for ``yacs.config.CfgNode`` while unpickling: an OrderedDict of its plain data.

    The official Focal Transformer's training script saves its yacs config beside the weights
    (``checkpoint['config']``); this reads it without importing yacs or running its code.
    """

    def __new__(cls, *args):
        return OrderedDict()


def _within_storage(rebuild: Callable) -> Callable:
    """One of torch's tensor rebuild functions, refusing a view with more elements than its storage holds
    bytes for: an expanded (stride 0) view of a few bytes, which any copy (mmengine deep-copies the
    message hub on resume) would turn into gigabytes. Views into a larger storage (slices) load."""

    @functools.wraps(rebuild)
    def rebuild_within_storage(storage, storage_offset, size, stride, *rest):
        """Rebuild a tensor as torch does, after checking that its storage holds all of its bytes.

        Args:
            storage (TypedStorage | UntypedStorage): The storage the tensor views.
            storage_offset (int): Where the view starts in the storage, in elements.
            size (tuple[int]): The tensor's shape.
            stride (tuple[int]): The view's strides.
            *rest: The rebuild function's other arguments (``requires_grad``, ..., and the dtype for
                ``_rebuild_tensor_v3``).

        Returns:
            torch.Tensor: What ``rebuild`` returns.

        Raises:
            RefusedObject: If ``storage`` is not a storage of the file, ``size`` is not a tuple of sizes,
                or the view declares more bytes than the storage holds.
        """
        if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)) or \
                not isinstance(size, tuple) or not all(type(n) is int and n >= 0 for n in size):
            raise RefusedObject(f'torch._utils.{rebuild.__name__}', f'of a {type(storage).__name__} with size '
                                f'{str(size)[:80]}: only tensors over the file\'s storages')
        dtype = rest[2] if rebuild.__name__ == '_rebuild_tensor_v3' else getattr(storage, 'dtype', torch.uint8)
        declared = math.prod(size) * torch._utils._element_size(dtype)
        # (TypedStorage's own nbytes() warns that TypedStorage is deprecated; torch itself builds one here.)
        held = getattr(storage, '_untyped_storage', storage).nbytes()
        if declared > held:
            raise RefusedObject(f'torch._utils.{rebuild.__name__}', f'a tensor of {declared} bytes (size {size}, '
                                f'stride {stride}) over {held} bytes of storage: an expanded view, which a copy would '
                                'blow up')
        return rebuild(storage, storage_offset, size, stride, *rest)

    return rebuild_within_storage


def _checkpoint_allowed() -> Allowed:
    """What a torch checkpoint may hold: what torch's weights-only loader allows for tensors, minus what
    can make memory or run code, plus mmengine's and the authors' data classes and the numpy builders.

    Tensors come from ``torch._utils``' rebuild functions over storages that torch reads from the file
    (``set_`` checks the view against the storage's size); sparse, quantized, nested and subclassed
    tensors are not read (torch checks sparse indices only under its own weights-only loader).
    Storage and tensor classes are names a pickle may use, never call: ``torch.Tensor(n)`` and
    ``torch.UntypedStorage(n)`` would make uninitialised memory of any size.
    """
    rebuild = [_within_storage(getattr(torch._utils, name)) for name in ('_rebuild_tensor', '_rebuild_tensor_v2',
                                                                         '_rebuild_tensor_v3')
               if hasattr(torch._utils, name)]
    rebuild += [getattr(torch._utils, name) for name in ('_rebuild_parameter', '_rebuild_parameter_with_state')
                if hasattr(torch._utils, name)]
    calls = {'collections.OrderedDict': OrderedDict, 'collections.Counter': Counter, 'builtins.set': set,
             'builtins.complex': complex, 'torch.Size': torch.Size, 'torch.device': torch.device,
             'torch.serialization._get_layout': torch.serialization._get_layout,
             'builtins.getattr': _history_buffer_statistic,
             **{f'torch._utils.{function.__name__}': function for function in rebuild}}
    classes = {'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer, 'yacs.config.CfgNode': ForeignConfig}
    names = {str(dtype): dtype for dtype in vars(torch).values() if isinstance(dtype, torch.dtype)}
    # Protocol 4 and later name HistoryBuffer's statistics directly (protocol 2 fetches them with getattr).
    names.update({f'mmengine.logging.history_buffer.HistoryBuffer.{name}': getattr(HistoryBuffer, name)
                  for name in _HISTORY_BUFFER_STATISTICS})
    names.update({'torch.storage.UntypedStorage': torch.UntypedStorage, 'torch.UntypedStorage': torch.UntypedStorage,
                  **calls, **classes, **STRING_GLOBALS, **NUMPY_GLOBALS})
    return Allowed(names, calls.values(), classes.values(), persistent_ids=True)


class _CheckpointUnpickler(DataUnpickler):
    allowed = _checkpoint_allowed()


# What torch.load takes as its pickle_module: torch then unpickles with our unpickler (and, since a
# pickle_module is given, not with its own weights-only one, on any torch version).
CHECKPOINT_UNPICKLER = types.SimpleNamespace(
    __name__=__name__, Unpickler=_CheckpointUnpickler,
    load=lambda file, **kwargs: _CheckpointUnpickler(file, **kwargs).load())


def _first_line(error: BaseException) -> str:
    text = ' '.join(str(error).split('\n')[0].split())
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


# What torch's RuntimeErrors say about a damaged file (any other is about the machine or the call).
_DAMAGE = ('PytorchStreamReader', 'Invalid magic number', 'record size', 'storage has wrong byte size',
           'out of bounds for storage', 'Invalid protocol version')


def _translate_errors(source: str):
    """A decorator for a loader: whatever a damaged or hostile file makes it raise becomes one of the
    errors above, naming ``source`` (no traceback into the unpickler, no advice to unpickle unsafely)."""

    def decorate(load: Callable):
        """Wrap a loader so that its errors become the package's.

        Args:
            load (Callable): The loader.

        Returns:
            Callable: The loader, taking the same arguments.
        """
        @functools.wraps(load)
        def guarded(*args, **kwargs):
            """Call the loader, turning what a damaged or hostile file raises into the package's errors.

            Args:
                *args: The loader's positional arguments.
                **kwargs: The loader's keyword arguments.

            Returns:
                object: What the loader returns.
            """
            try:
                return load(*args, **kwargs)
            except MMFocalError:
                raise
            except RefusedObject as refused:
                raise UnsafeCheckpointError(source, [refused.name], refused.detail) from None
            except pickle.UnpicklingError as error:
                if 'WeightsUnpickler error:' in str(error):  # torch's own loader (TORCH_FORCE_WEIGHTS_ONLY_LOAD)
                    refusal = str(error).split('WeightsUnpickler error:')[-1].strip().split('\n')[0]
                    refusal = refusal.split('. Please use')[0]
                    raise UnsafeCheckpointError(source, [], f"{refusal}; torch's own weights-only loader read it, as "
                                                'TORCH_FORCE_WEIGHTS_ONLY_LOAD is set') from None
                raise IncompleteCheckpointError(source, f'its pickle cannot be read: {_first_line(error)}') from None
            except (urllib.error.URLError, ImportError):  # a download or a missing package, not the file
                raise
            except OSError as error:  # a file that cannot be read (permissions, I/O errors)
                raise UnreadableCheckpointError(source, error.strerror or _first_line(error)) from None
            except RuntimeError as error:
                if not any(damage in str(error) for damage in _DAMAGE):  # e.g. a CUDA checkpoint on a CPU
                    raise UnreadableCheckpointError(source, _first_line(error)) from None
                raise IncompleteCheckpointError(source, _first_line(error)) from None
            except MemoryError:
                raise IncompleteCheckpointError(source, 'it declares more data than it holds or memory allows') \
                    from None
            except Exception as error:  # noqa: BLE001  a damaged or crafted file; the cause is in the message
                raise IncompleteCheckpointError(source, _first_line(error)) from None

        return guarded

    return decorate


_CRC_CHUNK = 1 << 20


def check_zip_members(file, source: str) -> None:
    """Check that every member of a zip checkpoint is stored uncompressed and passes its CRC.

    torch never compresses, and its reader checks neither, so a flipped bit would load as a wrong
    weight. Streamed in 1 MiB pieces: one read of the file, no copy of it in memory.

    Args:
        file (str | IO[bytes]): A path or a seekable file object.
        source (str): What the messages name.

    Raises:
        IncompleteCheckpointError: A compressed member, a failed CRC, a damaged zip.
        UnreadableCheckpointError: A TorchScript archive (``torch.load`` would hand it to
            ``torch.jit.load``).
    """
    try:
        with zipfile.ZipFile(file) as archive:
            if any(name.split('/')[-1] == 'constants.pkl' for name in archive.namelist()):
                raise UnreadableCheckpointError(source, 'it is a TorchScript archive (torch.jit.save), not a '
                                                'checkpoint of weights')
            for member in archive.infolist():
                if member.compress_type != zipfile.ZIP_STORED:
                    raise IncompleteCheckpointError(source, f'member {member.filename} is compressed, which '
                                                    'torch never writes')
                with archive.open(member) as data:
                    while data.read(_CRC_CHUNK):
                        pass
    except zipfile.BadZipFile as error:
        raise IncompleteCheckpointError(source, f'{error} (a bit changed since it was written?)') from None


def _check_format(file, source: str) -> None:
    """A zip checkpoint's members checked (:func:`check_zip_members`); the legacy tar format refused (torch
    would extract it to a temporary folder). ``file``: a path or a seekable file object, left at its start."""
    try:
        if zipfile.is_zipfile(file):
            check_zip_members(file, source)
        elif tarfile.is_tarfile(file):
            raise UnreadableCheckpointError(source, "it is in PyTorch's tar format of before 2018 (torch < 0.4), "
                                            'which mmfocal does not read')
    finally:
        if hasattr(file, 'seek'):
            file.seek(0)


def _torch_load(file, map_location=None, source: Optional[str] = None):
    """``torch.load`` of a path or seekable file object with our unpickler, after :func:`_check_format`;
    torch's own weights-only one where the environment demands it (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``,
    which refuses any other)."""
    _check_format(file, source or str(getattr(file, 'name', file)))
    if os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes', 'true'):
        return torch.load(file, map_location=map_location, weights_only=True)
    return torch.load(file, map_location=map_location, pickle_module=CHECKPOINT_UNPICKLER)


class _TorchLoadingAsData(types.ModuleType):
    """What mmengine.runner.checkpoint sees as ``torch`` once installed: torch, whose ``load`` reads as
    data. mmengine's other loaders (``pavi://``, ``s3://`` and the other ceph schemes, ``open-mmlab://``
    names of local files) call ``torch.load`` themselves, which before torch 2.6 unpickles anything."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(file, map_location=None):
        """``torch.load`` with mmfocal's checkpoint unpickler.

        Args:
            file (str | IO[bytes]): A path or a seekable file object.
            map_location (str | torch.device | Callable, optional): As for ``torch.load``.
                Defaults to None.

        Returns:
            object: What the file holds.
        """
        return _torch_load(file, map_location, source=str(getattr(file, 'name', 'a downloaded checkpoint')))


_TORCH_LOADING_AS_DATA = _TorchLoadingAsData('torch')


def load_checkpoint_file(filename: str, map_location=None):
    """A local checkpoint file, unpickled as data only (see the module's docstring).

    Args:
        filename (str): A torch checkpoint (zip or legacy pickle format), or a PaddleViT
            ``.pdparams`` file, read by :func:`mmfocal.engine.pdparams.load_pdparams`.
        map_location (str | torch.device | Callable, optional): As for ``torch.load``.
            Defaults to None.

    Returns:
        dict: What the file holds.

    Raises:
        MMFocalError: One of :mod:`mmfocal.engine.checkpoint_files`' errors, naming the file, or
            MissingFileError.
    """
    filename = osp.expanduser(filename)
    check_regular_file(filename)
    if is_pdparams(filename):
        return load_pdparams(filename)
    checkpoint = _translate_errors(filename)(_torch_load)(filename, map_location)
    _check_state_dict_keys(filename, checkpoint)
    return checkpoint


def _check_state_dict_keys(filename: str, checkpoint) -> None:
    """A state dict (``state_dict`` or the official ``model``) maps parameter names to tensors; other keys
    (numbers, None) would fail deep inside mmengine's or torch's loading, so they are refused here."""
    for entry in ('state_dict', 'model'):
        state = checkpoint.get(entry) if isinstance(checkpoint, dict) else None
        not_names = [repr(key)[:40] for key in state if type(key) is not str] if isinstance(state, dict) else []
        if not_names:
            raise UnreadableCheckpointError(filename, f'its {entry} maps parameter names to tensors, but has keys '
                                            f'that are not names: {", ".join(not_names[:5])}')


def cached_checkpoint_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where :func:`load_checkpoint_url` keeps the download of a URL.

    Args:
        url (str): The URL.
        model_dir (str, optional): The folder. Defaults to None: torch hub's
            ``<torch.hub.get_dir()>/checkpoints``.

    Returns:
        str: The folder joined with the URL's file name.
    """
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def load_checkpoint_url(url: str, map_location=None, model_dir: Optional[str] = None,
                        progress: bool = os.isatty(0)):
    """Download a checkpoint into the torch hub cache (rank 0 first) and load it as :func:`load_checkpoint_file` does.

    Args:
        url (str): The URL.
        map_location (str | torch.device | Callable, optional): As for ``torch.load``.
            Defaults to None.
        model_dir (str, optional): The download folder (:func:`cached_checkpoint_path`).
            Defaults to None.
        progress (bool): Show a progress bar. Defaults to whether stdin is a terminal.

    Returns:
        dict: What the file holds.

    Raises:
        CheckpointDownloadError: The download failed (on every rank of a distributed run).
        MMFocalError: The file cannot be loaded; the message names the URL and the cached file.
    """
    cached_file = cached_checkpoint_path(url, model_dir)
    model_dir = osp.dirname(cached_file)

    def download_and_load():
        try:
            if not osp.isfile(cached_file):
                os.makedirs(model_dir, exist_ok=True)
                torch.hub.download_url_to_file(url, cached_file, progress=progress)
        except urllib.error.URLError as error:  # HTTPError included
            raise CheckpointDownloadError(url, error) from None
        try:
            return load_checkpoint_file(cached_file, map_location)
        except MMFocalError as error:  # the message names the cached file; it says where that came from too
            error.args = (f'{url} (downloaded to {cached_file}): {error}', )
            raise

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
    """mmengine's loader for local paths, through :func:`load_checkpoint_file`.

    Args:
        filename (str): The checkpoint file.
        map_location (str | torch.device | Callable, optional): As for ``torch.load``.
            Defaults to None.

    Returns:
        dict: What the file holds.

    Raises:
        MMFocalError: As :func:`load_checkpoint_file` raises.
    """
    return load_checkpoint_file(filename, map_location)


@_marked_safe
def load_from_http(filename, map_location=None, model_dir=None, progress=os.isatty(0)):
    """mmengine's loader for ``http://`` and ``https://`` URLs, through :func:`load_checkpoint_url`.

    Args:
        filename (str): The URL.
        map_location (str | torch.device | Callable, optional): As for ``torch.load``.
            Defaults to None.
        model_dir (str, optional): The download folder. Defaults to None: torch hub's.
        progress (bool): Show a progress bar. Defaults to whether stdin is a terminal.

    Returns:
        dict: What the file holds.

    Raises:
        MMFocalError: As :func:`load_checkpoint_url` raises.
    """
    return load_checkpoint_url(filename, map_location, model_dir, progress)


def _guard_loader(loader: Callable) -> Callable:
    """Another scheme's loader (pavi, s3, open-mmlab local files, ...), with errors that name the file."""

    @_marked_safe
    @functools.wraps(loader)
    def guarded(filename, *args, **kwargs):
        """Call the scheme's loader; errors while loading name the file.

        Args:
            filename (str): The checkpoint's path or URL.
            *args: The loader's other positional arguments.
            **kwargs: The loader's keyword arguments.

        Returns:
            dict: What the loader returns.
        """
        return _translate_errors(filename)(loader)(filename, *args, **kwargs)

    return guarded


# What install() replaced, for uninstall(): mmengine's module-level load_from_http and each scheme
# prefix's loader. (torch's allow-list is never changed: the loaders use their own unpickler.)
_replaced = dict(load_from_http=None, torch=None, schemes={})


def install() -> None:
    """Make every mmengine checkpoint loader load as data (see the module's docstring).

    Idempotent; :func:`uninstall` puts back what it replaced.
    """
    # load_from_openmmlab, load_from_torchvision and load_from_mmcls call the module's
    # load_from_http by name, so it has to be replaced there as well as in the registry.
    if not getattr(mmengine_checkpoint.load_from_http, '_mmfocal_safe', False):
        _replaced['load_from_http'] = mmengine_checkpoint.load_from_http
    mmengine_checkpoint.load_from_http = load_from_http
    if mmengine_checkpoint.torch is not _TORCH_LOADING_AS_DATA:
        _replaced['torch'] = mmengine_checkpoint.torch
    mmengine_checkpoint.torch = _TORCH_LOADING_AS_DATA
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_mmfocal_safe', False):
            _replaced['schemes'][prefix] = loader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_mmfocal_safe', False):
            CheckpointLoader.register_scheme(prefixes=prefix, loader=_guard_loader(loader), force=True)


def uninstall() -> None:
    """Undo :func:`install`: mmengine's own loaders back in its CheckpointLoader and module.

    Idempotent. Loading is then what torch and mmengine do by themselves (with torch >= 2.6,
    mmengine's training checkpoints are refused by torch's default ``weights_only=True``, and URLs
    are unpickled without restriction).
    """
    if _replaced['load_from_http'] is not None:
        mmengine_checkpoint.load_from_http = _replaced['load_from_http']
        _replaced['load_from_http'] = None
    if _replaced['torch'] is not None:
        mmengine_checkpoint.torch = _replaced['torch']
        _replaced['torch'] = None
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if getattr(loader, '_mmfocal_safe', False):
            if prefix in _replaced['schemes']:
                CheckpointLoader.register_scheme(prefixes=prefix, loader=_replaced['schemes'][prefix], force=True)
            else:  # a loader registered after install() and wrapped by a later install()
                CheckpointLoader.register_scheme(prefixes=prefix, loader=loader.__wrapped__, force=True)
    _replaced['schemes'] = {}


def is_installed() -> bool:
    """Whether :func:`install` is in effect.

    Returns:
        bool: True if every registered loader is one of ours.
    """
    return all(getattr(loader, '_mmfocal_safe', False) for loader in CheckpointLoader._schemes.values()) and \
        getattr(mmengine_checkpoint.load_from_http, '_mmfocal_safe', False) and \
        mmengine_checkpoint.torch is _TORCH_LOADING_AS_DATA
