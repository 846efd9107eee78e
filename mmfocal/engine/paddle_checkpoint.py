"""PaddleViT's ports of the official checkpoints (``.pdparams``), read as data and converted.

PaddleViT (BR-IDL/PaddleViT, ``image_classification/Focal_Transformer``) publishes the six
official ImageNet checkpoints as ``paddle.save(model.state_dict())`` files: a plain pickle of a
dict from the official parameter names to numpy arrays, plus one bookkeeping entry
``StructuredToParameterName@@`` (a dict of str to str). Two things differ from the official
``.pth``: the arrays are numpy, and ``nn.Linear`` weights are stored as Paddle keeps them,
[in, out] instead of PyTorch's [out, in]. Conv weights and position tables are as in PyTorch.

:func:`load_pdparams` reads such a file with :class:`NumpyOnlyUnpickler` (numpy arrays and plain
containers; any other object is refused before it is created, so code in a file never runs) and
returns what the official ``.pth`` holds, ``{'model': state_dict}`` with torch tensors in
PyTorch's layout, so every path that takes an official checkpoint takes a ``.pdparams`` as well:
:func:`mmfocal.engine.safe_load.load_checkpoint_file` (and with it ``init_cfg`` Pretrained and
mmengine's loaders) calls it for a file named ``*.pdparams``.
"""
import re
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch

from .data_unpickler import NUMPY_GLOBALS, STRING_GLOBALS, Allowed, DataUnpickler, RefusedObject
from .pretrained import CheckpointMismatchError
from .safe_load import IncompleteCheckpointError, UnreadableCheckpointError, UnsafeCheckpointError, check_regular_file

__all__ = ['PADDLE_SUFFIX', 'NumpyOnlyUnpickler', 'is_pdparams', 'read_pdparams', 'official_state_dict',
           'load_pdparams', 'is_linear_weight']

PADDLE_SUFFIX = '.pdparams'
# paddle.save's record of the parameters' structured names (str to str); not a weight.
PADDLE_NAME_TABLE = 'StructuredToParameterName@@'

# The official models' nn.Linear layers, by name (checked against the published checkpoints' keys
# and our backbones' modules in tests/test_paddle_checkpoint.py): the attention's qkv and proj, the
# MLP's fc1 and fc2, the 'fc' pooling layers (pool_layers.k), Focal-fast's position-bias MLPs
# (attn.coord2rpb_all.{level}.{0,2}) and the classifier head. Shapes cannot tell: qkv is [C, 3C]
# but proj, the pooling fcs of a square window count and the position tables are square or 2-D too.
_LINEAR_WEIGHT = re.compile(r'^head\.weight$|'
                            r'\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2|pool_layers\.\d+|attn\.coord2rpb_all\.\d+\.\d+)'
                            r'\.weight$')
# pool_layers.k is a Linear with focal_pool='fc' (the published models) and a depthwise Conv2d with
# focal_pool='conv'; a conv weight is 4-D, which tells the two apart.
_CONV_POOLING_WEIGHT = re.compile(r'\.pool_layers\.\d+\.weight$')


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
    return str(filename).endswith(PADDLE_SUFFIX)


def read_pdparams(filename: str) -> dict:
    """The dict a ``.pdparams`` file holds (numpy arrays and the name table), read as data only.

    Raises UnsafeCheckpointError naming the refused object for a file that holds anything else,
    and IncompleteCheckpointError for a truncated or damaged one.
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


def is_linear_weight(key: str, value) -> bool:
    """Whether ``key`` is the weight of one of the official models' nn.Linear layers."""
    if not _LINEAR_WEIGHT.search(key):
        return False
    return not (_CONV_POOLING_WEIGHT.search(key) and np.ndim(value) == 4)


def official_state_dict(arrays: Mapping) -> 'OrderedDict[str, torch.Tensor]':
    """The official checkpoint's state dict from a ``.pdparams`` dict: torch tensors in the file's
    key order, Linear weights transposed from Paddle's [in, out] to [out, in], the name table left
    out. Anything else that is not a numeric array is a CheckpointMismatchError naming it."""
    state, not_arrays, bad_linear = OrderedDict(), [], []
    for key, value in arrays.items():
        if key == PADDLE_NAME_TABLE:
            continue
        if not isinstance(value, np.ndarray) or value.dtype.kind not in 'biuf':
            not_arrays.append(f'{key} ({type(value).__name__}{getattr(value, "dtype", "")})')
            continue
        if is_linear_weight(key, value):
            if value.ndim != 2:
                bad_linear.append(f'{key}: shape {value.shape}')
                continue
            value = value.T
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    problems = []
    if not_arrays:
        problems.append(f'entries that are not numeric arrays: {", ".join(not_arrays[:10])}')
    if bad_linear:
        problems.append(f'Linear weights that are not 2-D: {", ".join(bad_linear[:10])}')
    if problems:
        raise CheckpointMismatchError('not a PaddleViT Focal Transformer checkpoint: ' + '; '.join(problems))
    return state


def load_pdparams(filename: str) -> dict:
    """A ``.pdparams`` file as the official ``.pth`` holds its weights: ``{'model': state_dict}``."""
    try:
        return {'model': official_state_dict(read_pdparams(filename))}
    except CheckpointMismatchError as error:
        message = str(error)
        raise CheckpointMismatchError(message if filename in message else f'{filename}: {message}') from None
