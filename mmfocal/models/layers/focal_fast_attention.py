"""Focal-fast attention, pure PyTorch: the authors' faster Focal Transformer, module and block.

Computes the function of ``classification/focal_transformer_v2.py`` in microsoft/Focal-Transformer
(their "Focal-fast", configs ``focalv2_*_useconv_patch4_window7_224``) and keeps its parameter
names (``attn.coord2rpb_all.{level}``), so the published checkpoints load without renaming.

One job: the learned parts and their forward pass. Every query of a window attends to the same
keys: the ``topk`` map tokens and the ``topk`` pooled window tokens nearest to the window (which
ones, and the bias columns they use: :mod:`.fast_key_layout`). The position bias of a (query, key)
pair is a small MLP per level (Linear(2, head_dim), ReLU, Linear(head_dim, heads)) of the
query-to-key offset in tokens. No masks, no rolled keys.

The keys of every window are fetched by one ``index_select`` from a key source (the map's tokens,
then the pooled tokens), as for the paper's model, and the attention runs in the same kernels
(:mod:`.attention_kernels`). The bias differs per window, but only through the key offsets. Each
level's MLP runs once per distinct query-minus-key offset, giving a (heads, w*w, U) table over the
U distinct key positions; a window's bias is a gather of the table's columns, made per chunk of
windows and never stored for the whole map. Windows with identical columns go through the kernel
as groups that take one broadcast bias and sum their bias gradient before adding it to the table,
and the images of a batch share each chunk's gathered bias and bias-gradient scatter.
"""
import functools
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_kernels import attend
from .block import FocalBlockBase
from .fast_key_layout import FastKeyLayout, cached_fast_key_layout
from .parameter_cache import InferenceCache
from .tracing import is_tracing
from .windows import centre_to, merge_windows, window_queries_and_keys


class FocalFastAttention(nn.Module):
    """Each window's queries attend to the ``topk`` map tokens and ``topk`` pooled tokens nearest
    to the window, with MLP position biases (the official ``WindowAttention`` of Focal-fast).

    Args:
        dims (int): Channels C.
        num_heads (int): Heads; C must divide by it.
        window_size (int): The query window w. Defaults to 7.
        focal_level (int): 1 (map tokens only) or 2 (and one pooled level). Defaults to 2.
        topk (int): Keys a level. Defaults to 128.
        pool_method (str): 'none' means no pooled level (one level whatever ``focal_level``); any
            other method (the block's pooling) keeps ``focal_level`` levels. Defaults to 'fc'.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to True.
        qk_scale (float, optional): The query scale. Defaults to None: ``head_dims**-0.5``.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the output projection. Defaults to 0.

    Shapes: ``forward(x, pooled, size)`` takes the padded, normed map ``x`` (B, Hp, Wp, C) with
    Hp, Wp multiples of w, ``pooled`` an empty list or [(B, Hp / w, Wp / w, C)], and ``size`` the
    (H, W) of the map before padding; returns (B, Hp, Wp, C). Padded tokens are queries whose
    outputs the block drops; they are never keys.

    Analysis: with ``record_attention = True`` the next forward passes (through the plain autograd
    path) keep in ``self.recorded``: ``weights`` (B, nW, heads, w*w, keys) after softmax,
    ``index`` (nW, keys) into the key source (``< Hp * Wp``: the padded map's token, row-major;
    else ``Hp * Wp +`` the pooled token, row-major over the window grid), ``off_map`` (zeros),
    ``windows`` (nWh, nWw), ``keys_per_level`` and ``size`` (H, W).

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import FocalFastAttention
        >>> attn = FocalFastAttention(32, 4, window_size=7, focal_level=2, topk=16)
        >>> x = torch.randn(2, 14, 21, 32)  # a 12 x 20 map padded to 2 x 3 windows
        >>> pooled = [torch.randn(2, 2, 3, 32)]  # one pooled token per window
        >>> attn(x, pooled, size=(12, 20)).shape
        torch.Size([2, 14, 21, 32])
    """

    def __init__(self, dims: int, num_heads: int, *, window_size: int = 7, focal_level: int = 2, topk: int = 128,
                 pool_method: str = 'fc', qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if focal_level not in (1, 2):
            raise ValueError(f'Focal-fast has focal_level 1 (map tokens only) or 2 (and one pooled level, the '
                             f'most the official model indexes), got {focal_level}')
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f'focal_topk (keys per level) must be a positive integer, got {topk!r}')
        self.dims, self.num_heads = dims, num_heads
        self.window_size, self.topk = window_size, topk
        self.focal_level = focal_level if pool_method != 'none' else 1  # the levels it attends to
        head_dims = dims // num_heads
        self.scale = qk_scale or head_dims**-0.5
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dims, dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.coord2rpb_all = nn.ModuleList(
            nn.Sequential(nn.Linear(2, head_dims), nn.ReLU(inplace=True), nn.Linear(head_dims, num_heads))
            for _ in range(self.focal_level))
        self.record_attention = False
        self.recorded = None
        self._bias_cache = InferenceCache()

    def bias_table(self, layout: FastKeyLayout, dtype: torch.dtype) -> torch.Tensor:
        """The MLP bias of every query token against every distinct key position.

        Each level's MLP runs once per distinct query-minus-key offset (``layout.differences``),
        with features along the rows, so both layers are plain matrix products that leave the
        (heads, offsets) result in the layout the kernels gather from; the table is then a gather
        of its columns.

        Args:
            layout (FastKeyLayout): The key layout of the map.
            dtype (torch.dtype): The table's dtype.

        Returns:
            torch.Tensor: (heads, w*w, U).
        """
        heads, area = self.num_heads, self.window_size**2
        tables = []
        for mlp, differences, where in zip(self.coord2rpb_all, layout.differences, layout.difference_index):
            hidden_layer, activation, output_layer = mlp
            hidden = activation(torch.addmm(hidden_layer.bias[:, None], hidden_layer.weight,
                                            differences.t().to(dtype)))  # (hidden, V_l)
            values = torch.addmm(output_layer.bias[:, None], output_layer.weight, hidden)  # (heads, V_l)
            tables.append(values.index_select(1, where).view(heads, area, -1))
        return torch.cat(tables, 2)

    def forward(self, x: torch.Tensor, pooled: Sequence[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
        """Focal-fast attention of every window of a padded map.

        Args:
            x (torch.Tensor): The normed map, zero-padded to window multiples, (B, Hp, Wp, C).
            pooled (Sequence[torch.Tensor]): The pooled window tokens, one map (B, Hp / w, Wp / w, C),
                or none at focal level 1.
            size (tuple[int, int]): The map's (H, W) before padding, which decides the key sets.

        Returns:
            torch.Tensor: The attention's output, projected, (B, Hp, Wp, C).
        """
        B, hp, wp, C = x.shape
        w, heads = self.window_size, self.num_heads
        n_wh, n_ww = hp // w, wp // w
        # int(): while tracing the sizes may be traced values; the layout is a constant of the size.
        # Traced graphs take no window order or groups (Dynamo cannot trace the grouping's tolist).
        geometry = (w, self.topk, bool(pooled), int(size[0]), int(size[1]), x.device)
        layout = cached_fast_key_layout(*geometry, with_groups=not is_tracing(x))
        if is_tracing(x):
            bias = self.bias_table(layout, x.dtype)
        else:  # kept between passes without gradients while the MLPs keep their weights (a size at a time)
            bias = self._bias_cache.get((geometry, x.dtype), list(self.coord2rpb_all.parameters()),
                                        lambda: self.bias_table(layout, x.dtype))

        q, sources = window_queries_and_keys(x, pooled, self.qkv, self.scale, heads, w)
        source = torch.cat(sources, 1)  # (B, S, 2, heads, d)

        # Export and compilation run at a fixed size: the key sets are constants of that size
        # (mmfocal.deployment refuses a dynamic Focal-fast graph).
        out, weights = attend(q, source, layout.index, bias, layout.off_map, self.attn_drop, self.training,
                              record=self.record_attention, bias_columns=layout.kernel_columns())
        if weights is not None:
            self.recorded = dict(weights=weights.detach().view(B, n_wh * n_ww, heads, w * w, -1),
                                 index=layout.index.view(n_wh * n_ww, -1), off_map=layout.off_map,
                                 windows=(n_wh, n_ww), keys_per_level=layout.keys_per_level, size=tuple(size))
        return self.proj_drop(self.proj(merge_windows(out, B, hp, wp, w, C)))

    def extra_repr(self) -> str:
        return (f'dims={self.dims}, num_heads={self.num_heads}, window_size={self.window_size}, '
                f'focal_level={self.focal_level}, topk={self.topk}')


class FocalFastTransformerBlock(FocalBlockBase):
    """The paper block's norms, pooling, MLP and residuals around :class:`FocalFastAttention`.

    Args:
        dims (int): Channels C.
        num_heads (int): Heads; C must divide by it.
        window_size (int): The query window w. Defaults to 7.
        focal_level (int): 1 (map tokens only) or 2 (and one pooled level). Defaults to 2.
        topk (int): Keys a level. Defaults to 128.
        pool_method (str): How windows are pooled (see :class:`~.block.FocalBlockBase`).
            Defaults to 'fc'.
        mlp_ratio (float): MLP hidden channels a channel. Defaults to 4.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to True.
        qk_scale (float, optional): The query scale. Defaults to None: ``head_dims**-0.5``.
        drop (float): Dropout after the attention projection and in the MLP. Defaults to 0.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        drop_path (float): Stochastic depth of both residual branches. Defaults to 0.

    Shapes: (B, H, W, C) -> (B, H, W, C) for any H, W. As in the official model, the pooled tokens
    come from the unpadded normed map, centre-cropped or zero-padded to window multiples; the
    queries are that map zero-padded at the bottom/right to window multiples. The window never
    shrinks (the official model shrinks it to a map side smaller than the window, which changes
    the pooling weights' shape): such a map is padded to one window. Padded tokens are queries
    whose outputs are dropped, never keys; they enter the pooled tokens as zeros, as the official
    centre padding does.

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import FocalFastTransformerBlock
        >>> block = FocalFastTransformerBlock(32, 4, window_size=7, focal_level=2, topk=16)
        >>> block(torch.randn(2, 12, 20, 32)).shape
        torch.Size([2, 12, 20, 32])
    """

    def __init__(self, dims: int, num_heads: int, *, window_size: int = 7, focal_level: int = 2, topk: int = 128,
                 pool_method: str = 'fc', mlp_ratio: float = 4., qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0.):
        attention = functools.partial(
            FocalFastAttention, dims, num_heads, window_size=window_size, focal_level=focal_level, topk=topk,
            pool_method=pool_method, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
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
        rows, cols = math.ceil(H / w) * w, math.ceil(W / w) * w
        pooled = [self.pool(centre_to(x, rows, cols), 0)] if self.pooled_window_sizes else []
        if (rows, cols) != (H, W):
            x = F.pad(x, (0, 0, 0, cols - W, 0, rows - H))
        x = self.attn(x, pooled, (H, W))[:, :H, :W]
        return self._add_residuals(shortcut, x)
