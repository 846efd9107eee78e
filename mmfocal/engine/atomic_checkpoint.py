"""Checkpoints that are complete or absent, and resuming from the newest complete one.

mmengine writes a checkpoint by opening its final path and writing the bytes into it
(``save_checkpoint`` -> ``get_file_backend(path).put(bytes, path)``), so a job killed while
writing (preempted, out of memory, out of time) leaves a truncated ``epoch_N.pth`` behind, and
``last_checkpoint`` may point at it. :func:`install` (called by ``import mmfocal`` unless
``MMFOCAL_NO_PATCHES=1``; :func:`uninstall` undoes it) registers a local storage backend whose
writes go to a temporary file in the same directory, are flushed to disk and are then renamed over
the final path, which POSIX makes atomic: the final path holds the old content or the new, never
part of it. Only a regular file (or a new path) is replaced so: a device node, FIFO or socket
(also as a symlink's target) is written in place, as mmengine writes it, and keeps being what it
is. A write killed before its rename leaves its temporary file behind; the writer holds a lock
on it while it writes, so the next write into that directory, and :func:`remove_interrupted_writes`
(``tools/train.py --resume``), remove the temporary files no live writer holds.

:func:`find_latest_complete_checkpoint` is what ``--resume`` without a path uses: it trusts
``last_checkpoint`` only if the file it names is a complete checkpoint, and otherwise falls back to
the newest complete ``*.pth`` in the work directory, skipping truncated files and the temporary
files of interrupted writes.
"""
import fcntl
import glob
import io
import logging
import os
import os.path as osp
import pickle
import re
import secrets
import stat
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
from mmengine.fileio import FileClient, register_backend
from mmengine.fileio import io as file_io
from mmengine.fileio.backends import LocalBackend, registry_utils
from mmengine.fileio.file_client import HardDiskBackend
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist

from .safe_load import CHECKPOINT_UNPICKLER

__all__ = ['AtomicLocalBackend', 'write_atomically', 'save_checkpoint', 'is_complete_checkpoint',
           'find_latest_complete_checkpoint', 'remove_interrupted_writes', 'install', 'uninstall', 'is_installed',
           'TEMP_SUFFIX']

# Temporary files are hidden and end in TEMP_SUFFIX, so neither a ``*.pth`` glob nor a human
# mistakes one for a checkpoint.
TEMP_SUFFIX = '.partial'
# The names write_atomically gives them; other hidden .partial files (another program's) are not ours.
_TEMP_NAME = re.compile(r'^\..+\.\d+\.[0-9a-f]{8}' + re.escape(TEMP_SUFFIX) + '$')


def write_atomically(filepath: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``filepath`` so that a reader sees the old file or the whole new one.

    Through a symlink, its target is replaced as a plain write would, not the link itself. A path
    that is there but is not a regular file (a device node, a FIFO) is written in place, as
    mmengine's LocalBackend writes: a rename over it would make it a regular file. First, the
    temporary files that killed writes left in the directory are removed
    (:func:`remove_interrupted_writes`).

    Args:
        filepath (str | Path): The file to write; its directory is created if missing.
        data (bytes): The whole new content of the file.
    """
    filepath = osp.realpath(os.fspath(filepath))
    if _is_special_file(filepath):
        with open(filepath, 'wb') as file:
            file.write(data)
        return
    directory, name = osp.split(filepath)
    mkdir_or_exist(directory)
    remove_interrupted_writes(directory)
    temp_path = osp.join(directory, f'.{name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}')
    # 0o666 and O_EXCL: the umask decides the mode as for open(), and no other file is clobbered.
    descriptor = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, 'wb') as file:
            # Held until the file is renamed and closed: while it is held, no cleaner takes the
            # file for the leftover of a killed write. The system drops it when the writer dies.
            _try_lock(file.fileno())
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            os.replace(temp_path, filepath)
    except BaseException:
        if osp.exists(temp_path):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def remove_interrupted_writes(directory: str, logger='current') -> Tuple[int, int]:
    """Remove the temporary files that killed writes left in ``directory``.

    A temporary file (``.<name>.<pid>.<8 hex digits>.partial``) is a killed write's when no process
    holds its lock: its writer holds it until the rename, and the system drops it when the writer
    dies. So a write in progress, of this process or another, is never touched; on a filesystem
    without locks nothing is removed. Other files, symlinks among them, are never touched.

    Args:
        directory (str): The directory to clean; a missing one is left as it is.
        logger (str | logging.Logger): Where the count of removed files is logged, if there were
            any, as mmengine's ``print_log`` takes it. Defaults to 'current'.

    Returns:
        tuple[int, int]: How many temporary files were removed, and their bytes in all.
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    sizes = [_remove_if_abandoned(osp.join(directory, name)) for name in names if _TEMP_NAME.match(name)]
    sizes = [size for size in sizes if size is not None]
    if sizes:
        print_log(f'{directory}: removed {len(sizes)} temporary file(s) of interrupted checkpoint writes '
                  f'({sum(sizes)} bytes)', logger=logger)
    return len(sizes), sum(sizes)


def _is_special_file(path: str) -> bool:
    """Whether ``path`` is there and is not a regular file (a device node, FIFO, socket, folder)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _try_lock(descriptor: int) -> bool:
    """Take the exclusive lock of an open file without waiting; False if another process holds it
    or the filesystem has no locks."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _remove_if_abandoned(path: str) -> Optional[int]:
    """Remove the temporary file ``path`` if no writer holds its lock; its size, or None if kept."""
    try:
        # Not through a symlink, and without waiting on a FIFO that merely has such a name.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # renamed into place by its writer, or removed by another cleaner, meanwhile
        return None
    try:
        opened = os.fstat(descriptor)
        if not stat.S_ISREG(opened.st_mode) or not _try_lock(descriptor):
            return None
        try:
            # Still the file that was opened and locked (not renamed away and replaced meanwhile).
            current = os.stat(path, follow_symlinks=False)
            if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                return None
            os.unlink(path)
        except FileNotFoundError:
            return None
        return opened.st_size
    finally:
        os.close(descriptor)


def save_checkpoint(checkpoint: dict, filepath: Union[str, Path]) -> None:
    """``torch.save`` of ``checkpoint`` to ``filepath``, written atomically.

    Args:
        checkpoint (dict): The checkpoint to save.
        filepath (str | Path): Where to write it (see :func:`write_atomically`).
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomically(filepath, buffer.getvalue())


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable, so a machine crash cannot bring back the old entry."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems do not support fsync on directories
        pass
    finally:
        os.close(descriptor)


class _AtomicWrites:
    """The ``put`` and ``put_text`` of a storage backend, through :func:`write_atomically`."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to a local file atomically.

        Args:
            obj (bytes): The content to write.
            filepath (str | Path): The file to write.
        """
        write_atomically(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        """Write text to a local file atomically.

        Args:
            obj (str): The text to write.
            filepath (str | Path): The file to write.
            encoding (str): The encoding of the text. Defaults to 'utf-8'.
        """
        write_atomically(filepath, obj.encode(encoding))


class AtomicLocalBackend(_AtomicWrites, LocalBackend):
    """mmengine's LocalBackend whose ``put``/``put_text`` write atomically."""


class _AtomicHardDiskBackend(_AtomicWrites, HardDiskBackend):
    """The same for the deprecated FileClient (``file_client_args``) path."""


def _use_backends(local: type, disk: type) -> None:
    """Make ``local`` mmengine's backend for local paths and ``disk`` the FileClient's 'disk', and
    drop the instances mmengine cached of the classes they replace."""
    replaced = (registry_utils.backends['local'], FileClient._backends['disk'])
    register_backend('local', local, force=True, prefixes='')
    FileClient.register_backend('disk', disk, force=True)
    for key, instance in list(file_io.backend_instances.items()):
        if type(instance) in replaced:
            del file_io.backend_instances[key]


def install() -> None:
    """Make mmengine write local files (checkpoints included) atomically; idempotent.
    :func:`uninstall` puts mmengine's own backends back."""
    _use_backends(AtomicLocalBackend, _AtomicHardDiskBackend)


def uninstall() -> None:
    """Undo :func:`install`: mmengine's LocalBackend and HardDiskBackend write local files again,
    in place (a job killed while writing can leave a truncated file behind); idempotent."""
    _use_backends(LocalBackend, HardDiskBackend)


def is_installed() -> bool:
    """Whether local files are written through :class:`AtomicLocalBackend` (:func:`install`)."""
    return registry_utils.backends['local'] is AtomicLocalBackend and \
        registry_utils.prefix_to_backends[''] is AtomicLocalBackend and \
        FileClient._backends['disk'] is _AtomicHardDiskBackend


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole training checkpoint: a torch zip file with a ``state_dict``.

    Decided in this order, each for its reason:

    * no such file: False;
    * the zip directory or the pickle record (``data.pkl``) cannot be read (``zipfile.BadZipFile``):
      False. The directory is the last thing written, so a truncated file has lost it, and the
      record's CRC catches a damaged pickle. Files in torch's legacy (pre-1.6) format are not zip
      files either and count as not complete: mmengine writes the zip format with any torch this
      package supports;
    * the pickle loads as data (mmfocal's checkpoint unpickler, the one every checkpoint loader of
      the process uses; tensor storage memory-mapped, not read, so the check costs little for a
      large file): True if it is a dict with a ``state_dict``;
    * the unpickler refuses the pickle (``pickle.UnpicklingError``): True. Its bytes were checked
      whole above, so the file is complete; refusing it, with the reason, is the loader's job, and
      skipping it here would resume silently from an older state;
    * torch's reader finds a storage record missing or damaged (a ``RuntimeError`` from its
      ``PytorchStreamReader``): False.

    Anything else, such as a file that cannot be read at all (``PermissionError``), is raised: it
    says nothing about completeness.
    """
    if not osp.isfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith('/data.pkl') or name == 'data.pkl']
            if len(pickles) != 1:
                return False
            archive.read(pickles[0])  # checks the record's CRC
    except zipfile.BadZipFile:
        return False
    try:
        checkpoint = torch.load(path, map_location='cpu', mmap=True, pickle_module=CHECKPOINT_UNPICKLER)
    except pickle.UnpicklingError:
        return True
    except RuntimeError as error:
        if 'PytorchStreamReader' in str(error):
            return False
        raise
    return isinstance(checkpoint, dict) and 'state_dict' in checkpoint


def _checkpoint_candidates(directory: str) -> List[str]:
    """The checkpoint files of a directory; best_* ones are copies kept for their score, not states
    to resume (temporary files are hidden and end in TEMP_SUFFIX, so the glob skips them)."""
    return [path for path in glob.glob(osp.join(directory, '*.pth'))
            if not osp.basename(path).startswith('best_') and osp.isfile(path)]


def find_latest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should use: the newest complete one in ``work_dir``, or None.

    ``work_dir/last_checkpoint`` (written by mmengine's CheckpointHook) is used when the file it
    names is complete; otherwise the ``*.pth`` files of ``work_dir`` (and of the directory
    ``last_checkpoint`` points into, if different) are tried from the newest, and truncated or
    corrupt ones are skipped with a warning.
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(marker):
        with open(marker) as file:
            named = file.read().strip() or None
    if named is not None and is_complete_checkpoint(named):
        return named
    if named is not None:
        print_log(f'{marker} names {named}, which is missing or not a complete checkpoint; '
                  'looking for the newest complete checkpoint instead', logger='current',
                  level=logging.WARNING)
    directories = [work_dir]
    if named is not None and osp.isdir(osp.dirname(named)) and \
            osp.realpath(osp.dirname(named)) != osp.realpath(work_dir):
        directories.append(osp.dirname(named))
    candidates = sorted({path for directory in directories for path in _checkpoint_candidates(directory)},
                        key=lambda path: (os.stat(path).st_mtime_ns, path), reverse=True)
    for path in candidates:
        if is_complete_checkpoint(path):
            return path
        print_log(f'skipping {path}: not a complete training checkpoint (truncated, corrupt, or '
                  'without a state_dict)', logger='current', level=logging.WARNING)
    return None
