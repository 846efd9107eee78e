"""Focal self-attention (Yang et al., 2021), pure PyTorch: the paper's attention module and block.

The bottom layer of mmfocal: no OpenMMLab import. It computes the same function as the official
v1 model (microsoft/Focal-Transformer, ``classification/focal_transformer.py``) and keeps its
parameter names, so the published checkpoints load without renaming.

One job: the learned parts and their forward pass. Each query window attends to its own tokens,
its rolled neighbours and pooled tokens around it (the keys and their order:
:mod:`.key_layout`). Instead of the official rolls, partitions, index copies and in-place masked
adds, every key of every window is fetched by a precomputed ``index_select`` from a single source
tensor (map keys, pooled keys and one zero row), and all biases and masks are added in one
broadcast add (the kernels: :mod:`.attention_kernels`). Maps are channels-last (B, H, W, C).
"""
import functools
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_kernels import attend
from .block import FocalBlockBase
from .key_layout import (
    cached_key_layout,
    distinct_rolled_keys,
    key_layout_for_any_size,
    merge_repeated_slots,
    num_rolled_keys,
    pooled_neighbourhood,
    relative_position_index,
)
from .parameter_cache import InferenceCache
from .tracing import is_tracing
from .windows import merge_windows, window_queries_and_keys


class FocalWindowAttention(nn.Module):
    """Focal attention of each ``window_size`` window of a map to its fine and pooled surroundings.

    Args:
        dims (int): Channels C.
        num_heads (int): Heads; C must divide by it.
        window_size (int): The query window w. Defaults to 7.
        expand_size (int): The rolled neighbours' reach e, 0 (none) to w - 1. Defaults to 3.
        focal_window (int): The pooled neighbourhood's side at level 0, odd. Defaults to 7.
        focal_level (int): Levels counting the fine one (>= 1), so ``focal_level - 1`` pooled
            levels when ``pool_method != 'none'``. Defaults to 2.
        pool_method (str): 'none' means no pooled levels; any other (the block's pooling) keeps
            them. Defaults to 'fc'.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to True.
        qk_scale (float, optional): The query scale. Defaults to None: ``head_dims**-0.5``.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the output projection. Defaults to 0.

    Shapes: ``forward(x, pooled)`` takes the padded, normed map ``x`` (B, Hp, Wp, C) with Hp, Wp
    multiples of w, and ``pooled[k]`` (B, Hk, Wk, C) with ``Hk = Hp / w * 2**k``; returns
    (B, Hp, Wp, C).

    Analysis: with ``record_attention = True`` the next forward passes (through the plain autograd
    path) keep in ``self.recorded``: ``weights`` (B, nW, heads, w*w, keys) after softmax, ``index``
    (nW, keys) into the key source, ``off_map`` (nW, keys), ``windows`` (nWh, nWw) and
    ``with_rolled``.

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import FocalWindowAttention
        >>> attn = FocalWindowAttention(32, 4, window_size=7, expand_size=3, focal_window=7, focal_level=2)
        >>> x = torch.randn(2, 14, 21, 32)  # a padded map of 2 x 3 windows
        >>> pooled = [torch.randn(2, 2, 3, 32)]  # level 0: one pooled token per window
        >>> attn(x, pooled).shape
        torch.Size([2, 14, 21, 32])
    """

    def __init__(self, dims: int, num_heads: int, *, window_size: int = 7, expand_size: int = 3,
                 focal_window: int = 7, focal_level: int = 2, pool_method: str = 'fc', qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if not isinstance(focal_level, int) or focal_level < 1:
            raise ValueError(f'focal_level counts the fine level, so it must be an integer >= 1, got {focal_level!r}')
        if focal_window < 1 or focal_window % 2 != 1:
            raise ValueError(f'focal windows must be odd, got {focal_window}')
        if not 0 <= expand_size < window_size:
            raise ValueError(f'expand_size must be in 0..window_size - 1 = {window_size - 1}, got {expand_size}')
        self.dims, self.num_heads = dims, num_heads
        self.window_size, self.expand_size = window_size, expand_size
        self.focal_window = focal_window
        self.num_pooled_levels = focal_level - 1 if pool_method != 'none' else 0
        self.scale = qk_scale or (dims // num_heads)**-0.5
        w = window_size

        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1)**2, num_heads))
        self.register_buffer('window_bias_index', relative_position_index((w, w), (w, w)),
                             persistent=False)
        if expand_size > 0:
            self.relative_position_bias_table_to_neighbors = nn.Parameter(
                torch.zeros(1, num_heads, w * w, num_rolled_keys(w, expand_size)))
            nn.init.trunc_normal_(self.relative_position_bias_table_to_neighbors, std=.02)
            self.register_buffer('rolled_key_slots', distinct_rolled_keys(w, expand_size), persistent=False)
        self.relative_position_bias_table_to_windows = nn.ParameterList()
        for k in range(self.num_pooled_levels):
            side = self.pooled_neighbourhood(k)
            table = nn.Parameter(torch.zeros(num_heads, (w + side - 1)**2))
            nn.init.trunc_normal_(table, std=.02)
            self.relative_position_bias_table_to_windows.append(table)
            self.register_buffer(f'pooled_bias_index_{k}',
                                 relative_position_index((w, w), (side, side)), persistent=False)

        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dims, dims)
        self.proj_drop = nn.Dropout(proj_drop)
        # Set True to keep the attention weights of the next forward passes in ``self.recorded``
        # (through the plain path; for the analysis, see mmfocal.analysis).
        self.record_attention = False
        self.recorded = None
        self._bias_cache = InferenceCache()

    def pooled_neighbourhood(self, level: int) -> int:
        """Side of the pooled neighbourhood each window sees at ``level``.

        Args:
            level (int): The pooled level.

        Returns:
            int: The side, in pooled tokens.
        """
        return pooled_neighbourhood(self.focal_window, level)

    def position_bias(self, with_rolled: bool) -> torch.Tensor:
        """The position biases of every key, kept between passes without gradients while the
        tables keep their values (eager only: a traced graph builds them).

        Args:
            with_rolled (bool): Whether the keys include the rolled neighbours.

        Returns:
            torch.Tensor: (heads, w*w, keys), as :meth:`build_position_bias` builds it.
        """
        tables = [self.relative_position_bias_table, *self.relative_position_bias_table_to_windows]
        if self.expand_size > 0:
            tables.append(self.relative_position_bias_table_to_neighbors)
        return self._bias_cache.get(with_rolled, tables, lambda: self.build_position_bias(with_rolled))

    def build_position_bias(self, with_rolled: bool) -> torch.Tensor:
        """The position biases of every key, built from the tables.

        Args:
            with_rolled (bool): Whether the keys include the rolled neighbours.

        Returns:
            torch.Tensor: (heads, w*w, keys), keys in the order of :mod:`.key_layout`.
        """
        w2, heads = self.window_size**2, self.num_heads
        parts = [self.relative_position_bias_table.index_select(0, self.window_bias_index.view(-1))
                 .view(w2, w2, heads).permute(2, 0, 1)]
        if with_rolled and self.expand_size > 0:
            # One bias per rolled slot, one key per token: slots reaching the same token merge.
            parts.append(merge_repeated_slots(self.relative_position_bias_table_to_neighbors[0], self.rolled_key_slots))
        for k, table in enumerate(self.relative_position_bias_table_to_windows):
            index = getattr(self, f'pooled_bias_index_{k}')
            parts.append(table.index_select(1, index.view(-1)).view(heads, w2, -1))
        return torch.cat(parts, -1)

    def forward(self, x: torch.Tensor, pooled: Sequence[torch.Tensor], with_rolled: bool = True) -> torch.Tensor:
        """Focal attention of every window of a padded map.

        Args:
            x (torch.Tensor): The normed map, zero-padded to window multiples, (B, Hp, Wp, C).
            pooled (Sequence[torch.Tensor]): The pooled keys' maps, level k of shape
                (B, Hp / w * 2**k, Wp / w * 2**k, C) (:meth:`~.block.FocalBlockBase.pool`).
            with_rolled (bool | torch.Tensor): Whether the keys include the rolled neighbours; a 0-d
                bool tensor while traced. Defaults to True.

        Returns:
            torch.Tensor: The attention's output, projected, (B, Hp, Wp, C).
        """
        B, hp, wp, _ = x.shape
        C, w, heads = self.dims, self.window_size, self.num_heads
        head_dims = C // heads
        n_wh, n_ww = hp // w, wp // w
        geometry = (w, self.expand_size, self.focal_window, self.num_pooled_levels, n_wh, n_ww)
        if is_tracing(x):  # symbolic sizes: the layout is computed in the graph
            index, off_map = key_layout_for_any_size(*geometry, with_rolled, x.device)
            bias = self.build_position_bias(True)
        else:
            index, off_map = cached_key_layout(*geometry, with_rolled, x.device)
            bias = self.position_bias(with_rolled)

        q, sources = window_queries_and_keys(x, pooled, self.qkv, self.scale, heads, w)
        if self.num_pooled_levels:
            sources.append(sources[0].new_zeros(B, 1, 2, heads, head_dims))
        source = torch.cat(sources, 1)  # (B, S, 2, heads, d): every key and value any window uses

        out, weights = attend(q, source, index, bias, off_map, self.attn_drop, self.training,
                              record=self.record_attention)
        if weights is not None:
            self.recorded = dict(weights=weights.detach().view(B, n_wh * n_ww, heads, w * w, -1),
                                 index=index.view(n_wh * n_ww, -1), off_map=off_map, windows=(n_wh, n_ww),
                                 with_rolled=with_rolled)
        return self.proj_drop(self.proj(merge_windows(out, B, hp, wp, w, C)))

    def extra_repr(self) -> str:
        return (f'dims={self.dims}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'expand_size={self.expand_size}, focal_window={self.focal_window}, '
                f'pooled_levels={self.num_pooled_levels}')


def map_side_exceeds(size, window_size: int, device: torch.device) -> torch.Tensor:
    """``size > window_size`` as a 0-d bool tensor, without a Python branch on a symbolic size.

    Args:
        size (int): A map side (symbolic while tracing).
        window_size (int): The window w.
        device (torch.device): Where the result goes.

    Returns:
        torch.Tensor: A 0-d bool tensor.
    """
    return (torch.arange(size, device=device) >= window_size).any()


class FocalTransformerBlock(FocalBlockBase):
    """Pre-norm focal attention and MLP, each with a residual; stochastic depth on both.

    Args:
        dims (int): Channels C.
        num_heads (int): Heads; C must divide by it.
        window_size (int): The query window w. Defaults to 7.
        expand_size (int): The rolled neighbours' reach e, 0 (none) to w - 1. Defaults to 3.
        focal_window (int): The pooled neighbourhood's side at level 0, odd. Defaults to 7.
        focal_level (int): Levels counting the fine one (>= 1). Defaults to 2.
        pool_method (str): How windows are pooled (see :class:`~.block.FocalBlockBase`).
            Defaults to 'fc'.
        mlp_ratio (float): MLP hidden channels a channel. Defaults to 4.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to True.
        qk_scale (float, optional): The query scale. Defaults to None: ``head_dims**-0.5``.
        drop (float): Dropout after the attention projection and in the MLP. Defaults to 0.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        drop_path (float): Stochastic depth of both residual branches. Defaults to 0.

    Shapes: (B, H, W, C) -> (B, H, W, C) for any H, W. The map is zero-padded after ``norm1`` to
    multiples of the window, as in the official model.

    Small maps: the official model fixes its geometry at construction from the training image
    size; where a stage map is no larger than the window on its shorter side it drops the rolled
    keys and shrinks the window to that side. We decide per forward pass from the actual map: the
    rolled keys are used only when both sides exceed the window (the official rule, so a map of
    exactly one window uses none), but the window never shrinks: a map smaller than the window on
    one side is zero-padded to it, so the learned tables keep their shapes and any input size runs.

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import FocalTransformerBlock
        >>> block = FocalTransformerBlock(32, 4, window_size=7, expand_size=3, focal_window=7, focal_level=2)
        >>> block(torch.randn(2, 20, 30, 32)).shape
        torch.Size([2, 20, 30, 32])
    """

    def __init__(self, dims: int, num_heads: int, *, window_size: int = 7, expand_size: int = 3,
                 focal_window: int = 7, focal_level: int = 2, pool_method: str = 'fc', mlp_ratio: float = 4.,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0.):
        attention = functools.partial(
            FocalWindowAttention, dims, num_heads, window_size=window_size, expand_size=expand_size,
            focal_window=focal_window, focal_level=focal_level, pool_method=pool_method, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        num_pooled_levels = focal_level - 1 if pool_method != 'none' else 0
        super().__init__(dims, attention, window_size=window_size, num_pooled_levels=num_pooled_levels,
                         pool_method=pool_method, mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention and MLP with their residuals.

        Args:
            x (torch.Tensor): The map, (B, H, W, C).

        Returns:
            torch.Tensor: (B, H, W, C).
        """
        B, H, W, C = x.shape
        w = self.window_size
        shortcut = x
        x = self.norm1(x)
        # Written as a multiple of w minus the size (not (-H) % w): simpler for symbolic sizes.
        pad_b, pad_r = (H + w - 1) // w * w - H, (W + w - 1) // w * w - W
        # Traced for export or compilation, the sizes may be symbolic: no Python branch on them,
        # so one graph serves every input size (padding by 0 and cropping to the size are no-ops).
        traced = is_tracing(x)
        if traced or pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pooled = [self.pool(x, k) for k in range(len(self.pooled_window_sizes))]
        if traced:
            with_rolled = map_side_exceeds(H, w, x.device) & map_side_exceeds(W, w, x.device)
        else:
            with_rolled = min(H, W) > w
        x = self.attn(x, pooled, with_rolled=with_rolled)
        if traced:  # a gather, not a view: no guard on whether the crop is a no-op
            x = x.index_select(1, torch.arange(H, device=x.device)).index_select(2, torch.arange(W, device=x.device))
        elif pad_b or pad_r:
            x = x[:, :H, :W]
        return self._add_residuals(shortcut, x)
