"""PaddleViT's ports of the official checkpoints: their arrays as the official state dict.

PaddleViT (BR-IDL/PaddleViT, ``image_classification/Focal_Transformer``) publishes the six
official ImageNet checkpoints as ``paddle.save(model.state_dict())`` files: a dict from the
official parameter names to numpy arrays, plus one bookkeeping entry
``StructuredToParameterName@@`` (a dict of str to str). Two things differ from the official
``.pth``: the arrays are numpy, and ``nn.Linear`` weights are stored as Paddle keeps them,
[in, out] instead of PyTorch's [out, in]. Conv weights and position tables are as in PyTorch.

Reading the file itself (a pickle, read as data only) is :mod:`mmfocal.engine.pdparams`'s job.
"""
import re
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch

from .errors import CheckpointMismatchError

__all__ = ['PADDLE_NAME_TABLE', 'is_linear_weight', 'official_state_dict']

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


def is_linear_weight(key: str, value) -> bool:
    """Whether a key is the weight of one of the official models' nn.Linear layers.

    Args:
        key (str): The parameter's official name.
        value (numpy.ndarray | torch.Tensor): Its value (a 4-D ``pool_layers`` weight is a conv's).

    Returns:
        bool: True for a Linear layer's weight.
    """
    if not _LINEAR_WEIGHT.search(key):
        return False
    return not (_CONV_POOLING_WEIGHT.search(key) and np.ndim(value) == 4)


def official_state_dict(arrays: Mapping) -> 'OrderedDict[str, torch.Tensor]':
    """The official checkpoint's state dict from the dict a ``.pdparams`` file holds.

    Linear weights are transposed from Paddle's [in, out] to [out, in]; the name table is left out.

    Args:
        arrays (Mapping): Parameter names to numpy arrays, and the name table.

    Returns:
        OrderedDict: Torch tensors in the file's key order.

    Raises:
        CheckpointMismatchError: An entry that is not a numeric array, or a Linear weight that is
            not 2-D; the message names them.
    """
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
