"""Checkpoint files that cannot be loaded: the errors that say why, and the checks made before a file is opened.

Every failure to read a checkpoint is one of the errors below (all
:class:`~mmfocal.errors.MMFocalError`), one line naming the file and what is wrong. They live
apart from the loaders (:mod:`mmfocal.engine.safe_load`, :mod:`mmfocal.engine.pdparams`) so that
each loader imports them from below.
"""
import os
import pickle
import stat
from typing import List, Optional

from ..errors import BadArgumentError, MissingFileError, MMFocalError

__all__ = ['UnsafeCheckpointError', 'IncompleteCheckpointError', 'UnreadableCheckpointError',
           'CheckpointDownloadError', 'check_regular_file', 'check_checkpoint_file']


class UnsafeCheckpointError(MMFocalError, pickle.UnpicklingError):
    """A checkpoint holds Python objects outside the allow-list; it was refused, not executed.

    Args:
        source (str): The file (or URL) named in the message.
        refused (list[str]): The refused objects' names.
        detail (str): Why they were refused. Defaults to ''.
        advice (str, optional): What the reader should do, in place of the advice for torch
            checkpoints. Defaults to None.
    """

    def __init__(self, source: str, refused: List[str], detail: str = '', advice: Optional[str] = None):
        self.source = source
        self.refused = refused
        what = ', '.join(refused) if refused else 'objects that are not checkpoint data'
        what += f' ({detail})' if detail else ''
        advice = advice or (
            'Checkpoints of mmengine, mmdet, mmseg and the official Focal Transformer hold only tensors, '
            'numbers, strings, containers, numpy arrays of numbers and mmengine HistoryBuffers, which load. '
            'Unpickling such a file without this check can run arbitrary code or corrupt memory; load only files '
            'that hold checkpoint data.')
        super().__init__(
            f'refused to load the checkpoint {source}: it holds Python objects that are not checkpoint '
            f'data: {what}. The file was NOT executed: nothing in it ran. {advice}')


class IncompleteCheckpointError(MMFocalError, RuntimeError):
    """A checkpoint file is truncated or corrupt (for instance, its writer was killed).

    Args:
        source (str): The file named in the message.
        detail (str): What is damaged; its first line goes into the message.
    """

    def __init__(self, source: str, detail: str):
        self.source = source
        detail = ' '.join(str(detail).split('\n')[0].split()) or 'unknown damage'
        super().__init__(
            f'{source} is not a complete checkpoint: it is truncated or corrupt ({detail}). A process '
            'killed while writing a checkpoint leaves such a file unless it was written atomically, '
            'as it is with mmfocal imported; to resume, use the newest complete checkpoint '
            '(mmfocal.engine.atomic_checkpoint.find_latest_complete_checkpoint(work_dir)).')


class UnreadableCheckpointError(MMFocalError, ValueError):
    """Not a checkpoint file mmfocal reads: a directory, FIFO or device, or a format it does not read.

    Args:
        source (str): The file named in the message.
        detail (str): Why it cannot be read.
    """

    def __init__(self, source: str, detail: str):
        self.source = source
        super().__init__(f'cannot load the checkpoint {source}: {detail}')


class CheckpointDownloadError(MMFocalError, OSError):
    """A checkpoint URL could not be downloaded; the message says how to use a local copy instead.

    Args:
        url (str): The URL.
        cause (Exception): The download's error (an HTTP status is named in the message).
    """

    def __init__(self, url: str, cause: Exception):
        self.url = url
        reason = getattr(cause, 'reason', None) or cause
        status = f'HTTP {cause.code}: ' if getattr(cause, 'code', None) else ''
        super().__init__(
            f'could not download the checkpoint {url} ({status}{reason}). Download it by other means, '
            "or get it from someone who has it, and point the config at the local file, e.g. "
            '--cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth')


# What a path that is not a regular file is, for the messages (the first test that holds).
_FILE_KINDS = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
               (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), 'not a regular file')


def check_regular_file(filename: str) -> None:
    """Check, before a loader opens it, that a checkpoint file is there and is a regular file.

    Reading a directory, FIFO, device or socket would fail, block or never end.

    Args:
        filename (str): The file's path.

    Raises:
        MissingFileError: Nothing is there.
        UnreadableCheckpointError: It is not a regular file.
    """
    try:
        mode = os.stat(filename).st_mode
    except FileNotFoundError:
        raise MissingFileError(f'{filename} can not be found.') from None
    if not stat.S_ISREG(mode):
        kind = 'a FIFO (named pipe)' if stat.S_ISFIFO(mode) else _file_kind(mode)
        raise UnreadableCheckpointError(filename, f'it is {kind}, not a checkpoint file')


def check_checkpoint_file(path: str, what: str = 'checkpoint') -> None:
    """Check that a checkpoint a caller names is a local regular file, with the caller's words.

    Args:
        path (str): The file's path.
        what (str): What the messages call it. Defaults to 'checkpoint'.

    Raises:
        MissingFileError: ``<what> not found: PATH``.
        BadArgumentError: It is something other than a regular file (a directory, FIFO or
            device: reading one would hang or fail with a misleading message).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFileError(f'{what} not found: {path}') from None
    if not stat.S_ISREG(mode):
        raise BadArgumentError(f'{what} {path} is {_file_kind(mode)}, not a file')
