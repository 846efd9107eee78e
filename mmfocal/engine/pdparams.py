"""Reading PaddleViT's ``.pdparams`` checkpoint files as data only.

A ``.pdparams`` file (``paddle.save(model.state_dict())``) is a plain pickle of a dict from the
official parameter names to numpy arrays (:mod:`mmfocal.models.checkpoints.paddle_layout` says
what it holds and converts it). :func:`load_pdparams` reads one with :class:`NumpyOnlyUnpickler`
(numpy arrays and plain containers; any other object is refused before it is created, so code in
a file never runs) and returns what the official ``.pth`` holds, ``{'model': state_dict}`` with
torch tensors in PyTorch's layout, so every path that takes an official checkpoint takes a
``.pdparams`` as well: :func:`mmfocal.engine.safe_load.load_checkpoint_file` (and with it
``init_cfg`` Pretrained and mmengine's loaders) calls it for a file named ``*.pdparams``.
"""
from collections import OrderedDict
from typing import Mapping

from ..models.checkpoints import CheckpointMismatchError, official_state_dict
from .checkpoint_files import (
    IncompleteCheckpointError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    check_regular_file,
)
from .data_unpickler import NUMPY_GLOBALS, STRING_GLOBALS, Allowed, DataUnpickler, RefusedObject

__all__ = ['PADDLE_SUFFIX', 'NumpyOnlyUnpickler', 'is_pdparams', 'read_pdparams', 'load_pdparams']

PADDLE_SUFFIX = '.pdparams'

# What a .pdparams pickle may name: numpy's arrays and dtypes (through the checked builders of
# mmfocal.engine.data_unpickler, the same as for .pth files), OrderedDict, and latin-1 text encoded to
# bytes, which is how pickle protocol 2 (paddle.save(..., protocol=2)) writes the arrays' bytes.
# Dicts, lists, tuples, strings and numbers need no global.
_PADDLE_ALLOWED = Allowed({**NUMPY_GLOBALS, **STRING_GLOBALS, 'collections.OrderedDict': OrderedDict},
                          callables=[OrderedDict])


class NumpyOnlyUnpickler(DataUnpickler):
    """An unpickler that builds checked numpy arrays and plain containers and refuses every other object.

    A pickle runs code through the objects it names; here only the entries of ``_PADDLE_ALLOWED``
    resolve, so a file naming anything else (``os.system``, ``builtins.exec``, any class) is refused
    at that name, before anything is called. Persistent ids (the way torch files point at tensor
    storage) are refused too.
    """
    allowed = _PADDLE_ALLOWED


_ADVICE = ('A PaddleViT .pdparams file holds only numpy arrays in a dict. Unpickling this file without the check '
           'can run arbitrary code: do not open it with pickle.load or paddle.load.')


def is_pdparams(filename: str) -> bool:
    """Whether a file is named as a PaddleViT checkpoint.

    Args:
        filename (str): The file's path or URL.

    Returns:
        bool: True if it ends in ``.pdparams``.
    """
    return str(filename).endswith(PADDLE_SUFFIX)


def read_pdparams(filename: str) -> dict:
    """The dict a ``.pdparams`` file holds (numpy arrays and the name table), read as data only.

    Args:
        filename (str): The file's path.

    Returns:
        dict: Parameter names to numpy arrays, and paddle's name table.

    Raises:
        MissingFileError: Nothing is there.
        UnsafeCheckpointError: The file holds anything else; the message names the refused object.
        IncompleteCheckpointError: The file is truncated or damaged.
        UnreadableCheckpointError: Not a regular file, or keys that are not names.
        CheckpointMismatchError: It holds something other than a dict.
    """
    check_regular_file(filename)  # before opening: opening a FIFO waits for a writer
    with open(filename, 'rb') as file:
        try:
            content = NumpyOnlyUnpickler(file).load()
        except RefusedObject as refused:
            raise UnsafeCheckpointError(filename, [refused.name], refused.detail, advice=_ADVICE) from None
        except MemoryError:
            raise IncompleteCheckpointError(filename, 'it declares more data than it holds') from None
        except Exception as error:  # noqa: BLE001  a damaged or crafted pickle; the cause is in the message
            raise IncompleteCheckpointError(filename, f'its pickle cannot be read: {type(error).__name__}: '
                                            f'{error}') from None
    if not isinstance(content, Mapping):
        raise CheckpointMismatchError(f'{filename}: a .pdparams file holds a dict of arrays, '
                                      f'this one a {type(content).__name__}')
    not_names = [repr(key)[:40] for key in content if type(key) is not str]
    if not_names:
        raise UnreadableCheckpointError(filename, f'a .pdparams file maps parameter names to arrays; this one has '
                                        f'keys that are not names: {", ".join(not_names[:5])}')
    return content


def load_pdparams(filename: str) -> dict:
    """A ``.pdparams`` file as the official ``.pth`` holds its weights.

    Args:
        filename (str): The file's path.

    Returns:
        dict: ``{'model': state_dict}``, torch tensors in PyTorch's layout
        (:func:`mmfocal.models.checkpoints.official_state_dict`).

    Raises:
        MMFocalError: As :func:`read_pdparams`; CheckpointMismatchError (naming the file) for
            entries that are not numeric arrays or Linear weights that are not 2-D.
    """
    try:
        return {'model': official_state_dict(read_pdparams(filename))}
    except CheckpointMismatchError as error:
        message = str(error)
        raise CheckpointMismatchError(message if filename in message else f'{filename}: {message}') from None
