"""The transformer block around a focal attention: everything of the block but the attention.

One job: the parts both focal blocks share. :class:`FocalBlockBase` holds, in the official
model's order (and so its parameter names): the layers that pool windows of the normed map into
the pooled keys (``pool_layers``), ``norm1``, the attention (``attn``, built by the subclass's
factory), stochastic depth (:class:`DropPath`), ``norm2`` and the :class:`Mlp`. Maps are
channels-last: (B, H, W, C).
"""
import math
from typing import Callable

import torch
import torch.nn as nn

from ...errors import BadArgumentError
from .tracing import is_tracing
from .windows import crop_centre

POOLING_METHODS = ('fc', 'conv', 'mean', 'max', 'none')


class DropPath(nn.Module):
    """Stochastic depth: zeroes whole samples of the residual branch with probability ``p``.

    Args:
        p (float): The probability a sample's branch is dropped in training. Defaults to 0.

    Shapes: (B, ...) -> (B, ...).
    """

    def __init__(self, p: float = 0.):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop whole samples in training, scaling the kept ones by ``1 / (1 - p)``.

        Args:
            x (torch.Tensor): The residual branch, (B, ...).

        Returns:
            torch.Tensor: (B, ...).
        """
        if self.p == 0. or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'p={self.p}'


class Mlp(nn.Module):
    """Linear, GELU, dropout, linear, dropout.

    Args:
        dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
        drop (float): Dropout after each linear layer. Defaults to 0.

    Shapes: (..., dims) -> (..., dims).
    """

    def __init__(self, dims: int, hidden_dims: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP of each token.

        Args:
            x (torch.Tensor): (..., dims).

        Returns:
            torch.Tensor: (..., dims).
        """
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class FocalBlockBase(nn.Module):
    """Pre-norm attention and MLP, each with a residual and stochastic depth, and the pooling of
    windows that makes the attention's pooled keys. Subclasses give the attention and ``forward``.

    Args:
        dims (int): Channels C.
        attention (Callable[[], nn.Module]): Builds the attention module (``self.attn``); called
            after the pooling layers and ``norm1`` are built, the order in which the official
            model draws their initial weights from the random generator.
        window_size (int): The attention's query window w (tokens a side), positive.
        num_pooled_levels (int): Pooled levels (0 with ``pool_method='none'``); level k pools
            sub-windows of ``floor(w / 2**k)`` tokens.
        pool_method (str): How a sub-window becomes one token: 'fc' (a learned weighted sum),
            'conv' (a depthwise strided conv), 'mean', 'max', or 'none' (no pooled levels).
        mlp_ratio (float): MLP hidden channels a channel, positive. Defaults to 4.
        drop (float): Dropout after the attention projection and in the MLP. Defaults to 0.
        drop_path (float): Stochastic depth of both residual branches, in [0, 1). Defaults to 0.
    """

    def __init__(self, dims: int, attention: Callable[[], nn.Module], *, window_size: int, num_pooled_levels: int,
                 pool_method: str, mlp_ratio: float = 4., drop: float = 0., drop_path: float = 0.):
        super().__init__()
        if not isinstance(window_size, int) or window_size < 1:
            raise BadArgumentError(f'window_size must be a positive integer, got {window_size!r}')
        if pool_method not in POOLING_METHODS:
            raise BadArgumentError(f'focal_pool must be one of {POOLING_METHODS}, got {pool_method!r}')
        if not mlp_ratio > 0:  # also refuses NaN
            raise BadArgumentError(f'mlp_ratio must be positive (MLP hidden channels per channel), got {mlp_ratio!r}')
        if not 0 <= drop_path < 1:
            raise BadArgumentError(f'drop_path must be in [0, 1), got {drop_path!r}')
        self.window_size = window_size
        self.pool_method = pool_method
        self.pooled_window_sizes = [math.floor(window_size / 2**k) for k in range(num_pooled_levels)]
        self.pool_layers = nn.ModuleList()
        for size in self.pooled_window_sizes:
            if pool_method == 'fc':
                self.pool_layers.append(nn.Linear(size * size, 1))
            elif pool_method == 'conv':
                self.pool_layers.append(nn.Conv2d(dims, dims, size, stride=size, groups=dims))
        self.norm1 = nn.LayerNorm(dims)
        self.attn = attention()
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = Mlp(dims, int(dims * mlp_ratio), drop)

    def pool(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """One token a sub-window of pooled ``level``: the attention's pooled keys.

        Args:
            x (torch.Tensor): The padded, normed map, (B, Hp, Wp, C).
            level (int): The pooled level, 0 to ``num_pooled_levels - 1``.

        Returns:
            torch.Tensor: (B, Hk, Wk, C), ``Hk = Hp / w * 2**level`` (and so ``Wk``).
        """
        B, hp, wp, C = x.shape
        size = self.pooled_window_sizes[level]
        rows, cols = hp // self.window_size * 2**level, wp // self.window_size * 2**level
        x = crop_centre(x, rows * size, cols * size)
        if self.pool_method == 'fc':
            fc = self.pool_layers[level]
            windows = x.view(B, rows, size, cols, size, C)
            weight = fc.weight.view(size, size)
            if is_tracing(x):
                # ONNX Runtime's Einsum transposes the whole map first: a product and two sums
                # run much faster there (eager's einsum is the faster of the two in PyTorch)
                pooled = (windows * weight[:, None, :, None]).sum(4).sum(2)
            else:
                pooled = torch.einsum('bhiwjc,ij->bhwc', windows, weight)
            return pooled + fc.bias
        if self.pool_method == 'conv':
            return self.pool_layers[level](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        windows = x.view(B, rows, size, cols, size, C)
        if self.pool_method == 'mean':
            return windows.mean((2, 4))
        return windows.amax((2, 4))

    def _add_residuals(self, shortcut: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """``shortcut`` plus the attention branch, then plus the MLP branch (both with stochastic depth).

        Args:
            shortcut (torch.Tensor): The block's input, (B, H, W, C).
            attended (torch.Tensor): The attention branch's output, shaped as ``shortcut``.

        Returns:
            torch.Tensor: (B, H, W, C).
        """
        x = shortcut + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))
