"""FocalTransformer backbone: multi-scale NCHW feature maps for detection and segmentation.

Built from :mod:`mmfocal.models.layers.focal_attention`; parameter names follow the official model
(``patch_embed``, ``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``) so its ImageNet
checkpoints load as published. Adds what dense prediction needs: any input size, one LayerNorm
per output (``norm{i}``), frozen stages, activation checkpointing and strict pretrained loading.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule

from ..layers.focal_attention import POOLING_METHODS, FocalTransformerBlock, uses_standard_ops

ARCH_SETTINGS = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
EXPAND_LAYERS = ('all', 'even', 'odd')


class PatchEmbed(nn.Module):
    """Strided conv then LayerNorm: (B, C_in, H, W) -> (B, H', W', C_out), H' = ceil(H / stride).

    Patchify (kernel = stride) by default; with ``use_conv_embed`` the official overlapping convs
    (7x7 stride 4 padding 2 for the stem, 3x3 stride 2 padding 1 between stages). The input is
    zero-padded at the bottom/right to a multiple of the stride first, as mmdet's Swin does.
    """

    def __init__(self, in_channels: int, embed_dims: int, stride: int, use_conv_embed: bool = False,
                 is_stem: bool = False):
        super().__init__()
        self.stride = stride
        if use_conv_embed:
            kernel, padding = (7, 2) if is_stem else (3, 1)
        else:
            kernel, padding = stride, 0
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dims)
        self.patchify = not use_conv_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        H, W = x.shape[2:]
        pad_b, pad_r = (H + s - 1) // s * s - H, (W + s - 1) // s * s - W
        if uses_standard_ops(x) or pad_b or pad_r:  # traced: no branch on a (symbolic) size
            x = F.pad(x, (0, pad_r, 0, pad_b))
        if not self.patchify:
            return self.norm(self.proj(x).permute(0, 2, 3, 1))
        # Non-overlapping patches as one matmul over (s, s, C) patch vectors: the same function
        # as the conv, and its backward is several times faster than the conv's on the CPU.
        B, C, H, W = x.shape
        rows, cols = H // s, W // s
        patches = (x.permute(0, 2, 3, 1).reshape(B, rows, s, cols, s, C).transpose(2, 3)
                   .reshape(B, rows, cols, s * s * C))
        weight = self.proj.weight.permute(0, 2, 3, 1).reshape(self.proj.out_channels, -1)
        return self.norm(F.linear(patches, weight, self.proj.bias))


class FocalStage(nn.Module):
    """One stage: ``depth`` focal blocks, then (except the last stage) a 2x downsample.

    ``forward`` takes (B, H, W, C) and returns the stage output (B, H, W, C) and the next
    stage's input (B, ceil(H/2), ceil(W/2), 2C), or None after the last stage.
    """

    def __init__(self, blocks: Sequence[FocalTransformerBlock], downsample: Optional[PatchEmbed],
                 with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if self.downsample is None:
            return x, None
        return x, self.downsample(x.permute(0, 3, 1, 2))


class FocalTransformer(BaseModule):
    """Focal Transformer backbone (Yang et al., arXiv 2107.00641), the official v1 model's math.

    Args:
        arch: 'tiny', 'small' or 'base' set embed_dims, depths and num_heads to the published
            sizes; None keeps the values given.
        embed_dims: channels of stage 1; stage i has ``embed_dims * 2**i``.
        depths, num_heads: blocks and attention heads per stage.
        window_size: query window (tokens per side).
        focal_levels: levels per stage counting the fine one (2: fine + one pooled level).
        focal_windows: pooled neighbourhood per stage (odd). expand_sizes: rolled-neighbour reach
            per stage. expand_layer: which blocks use rolled neighbours: 'all', 'even', 'odd'.
        focal_pool: 'fc' (published), 'conv', 'mean', 'max' or 'none' (no pooled levels).
        use_conv_embed: overlapping conv stem and downsamples (the '-useconv' checkpoints).
        out_indices: stages to return. frozen_stages: -1 none, 0 the stem, i the stem and stages
            0..i-1 (eval mode, no gradients). with_cp: activation checkpointing per block.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads an official ImageNet
            checkpoint (or one of ours) strictly; see :mod:`mmfocal.engine.pretrained`.

    Shapes: (B, in_channels, H, W) with any H, W >= 1 -> tuple of (B, embed_dims * 2**i,
    ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) for i in out_indices, each after its own LayerNorm.
    """

    def __init__(self,
                 arch: Optional[str] = None,
                 embed_dims: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.2,
                 focal_levels: Sequence[int] = (2, 2, 2, 2),
                 focal_windows: Sequence[int] = (7, 5, 3, 1),
                 expand_sizes: Sequence[int] = (3, 3, 3, 3),
                 expand_layer: str = 'all',
                 focal_pool: str = 'fc',
                 use_conv_embed: bool = False,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        if init_cfg is not None and not isinstance(init_cfg, dict):
            raise TypeError(f'init_cfg must be a dict or None, got {type(init_cfg).__name__}')
        super().__init__(init_cfg=init_cfg)
        if arch is not None:
            if arch not in ARCH_SETTINGS:
                raise ValueError(f'arch must be one of {sorted(ARCH_SETTINGS)} or None, got {arch!r}')
            embed_dims, depths, num_heads = (ARCH_SETTINGS[arch][k] for k in ('embed_dims', 'depths', 'num_heads'))
        depths, num_heads = tuple(depths), tuple(num_heads)
        focal_levels, focal_windows, expand_sizes = tuple(focal_levels), tuple(focal_windows), tuple(expand_sizes)
        out_indices = tuple(out_indices)
        _check_arguments(embed_dims, depths, num_heads, focal_levels, focal_windows, expand_sizes,
                         expand_layer, focal_pool, in_channels, patch_size, window_size, out_indices,
                         frozen_stages)
        self.arch = arch
        self.embed_dims = embed_dims
        self.in_channels = in_channels
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.num_stages = len(depths)
        self.num_features = [embed_dims * 2**i for i in range(self.num_stages)]

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, use_conv_embed, is_stem=True)
        self.pos_drop = nn.Dropout(drop_rate)
        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        no_expand_parity = {'all': None, 'even': 0, 'odd': 1}[expand_layer]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dims = self.num_features[i]
            first = sum(depths[:i])
            blocks = [
                FocalTransformerBlock(
                    dims, heads, window_size,
                    expand_size=0 if j % 2 == no_expand_parity else expand_sizes[i],
                    focal_window=focal_windows[i], focal_level=focal_levels[i], pool_method=focal_pool,
                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                    attn_drop=attn_drop_rate, drop_path=drop_path_rates[first + j]) for j in range(depth)
            ]
            downsample = (PatchEmbed(dims, 2 * dims, 2, use_conv_embed)
                          if i < self.num_stages - 1 else None)
            self.layers.append(FocalStage(blocks, downsample, with_cp))
        for i in out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self.apply(_init_like_official)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'FocalTransformer expects a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'FocalTransformer was built with in_channels={self.in_channels}, '
                             f'but the input has {x.shape[1]} channels (shape {tuple(x.shape)})')
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'FocalTransformer got an empty image of shape {tuple(x.shape)}')
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(out).permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            _freeze(self.patch_embed)
        for i in range(self.frozen_stages):
            _freeze(self.layers[i])
            if i in self.out_indices:
                _freeze(getattr(self, f'norm{i}'))

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self):
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            from ...engine.pretrained import load_pretrained
            load_pretrained(self, self.init_cfg['checkpoint'], map_location='cpu',
                            prefix=self.init_cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()


def _freeze(module: nn.Module):
    module.eval()
    for param in module.parameters():
        param.requires_grad = False


def _init_like_official(m: nn.Module):
    """The official model's init: truncated-normal linears (pooling fcs included), unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _check_arguments(embed_dims, depths, num_heads, focal_levels, focal_windows, expand_sizes,
                     expand_layer, focal_pool, in_channels, patch_size, window_size, out_indices,
                     frozen_stages):
    per_stage = dict(depths=depths, num_heads=num_heads, focal_levels=focal_levels,
                     focal_windows=focal_windows, expand_sizes=expand_sizes)
    lengths = {name: len(v) for name, v in per_stage.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'per-stage settings must have one entry per stage; got lengths {lengths}')
    num_stages = lengths['depths']
    if num_stages == 0:
        raise ValueError('depths must name at least one stage')
    for name, values in per_stage.items():
        if any(not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f'{name} must be non-negative integers, got {values}')
    if any(d < 1 for d in depths) or any(h < 1 for h in num_heads):
        raise ValueError(f'every stage needs depth >= 1 and num_heads >= 1, got depths={depths}, '
                         f'num_heads={num_heads}')
    for i, heads in enumerate(num_heads):
        if (embed_dims * 2**i) % heads:
            raise ValueError(f'stage {i} has {embed_dims * 2**i} channels (embed_dims={embed_dims} * 2**{i}), '
                             f'not divisible by num_heads[{i}]={heads}')
    if any(level < 1 for level in focal_levels):
        raise ValueError(f'focal_levels count the fine level, so each must be >= 1, got {focal_levels}')
    if any(fw % 2 == 0 for fw in focal_windows):
        raise ValueError(f'focal_windows must be odd, got {focal_windows}')
    if any(e >= window_size for e in expand_sizes):
        raise ValueError(f'expand_sizes must be smaller than window_size={window_size}, got {expand_sizes}')
    if focal_pool not in POOLING_METHODS:
        raise ValueError(f'focal_pool must be one of {POOLING_METHODS}, got {focal_pool!r}')
    if expand_layer not in EXPAND_LAYERS:
        raise ValueError(f'expand_layer must be one of {EXPAND_LAYERS}, got {expand_layer!r}')
    if in_channels < 1 or patch_size < 1 or window_size < 1:
        raise ValueError(f'in_channels, patch_size and window_size must be positive, got '
                         f'{in_channels}, {patch_size}, {window_size}')
    if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
        raise ValueError(f'out_indices must be a non-empty subset of 0..{num_stages - 1}, got {out_indices}')
    if list(out_indices) != sorted(set(out_indices)):
        raise ValueError(f'out_indices must be increasing without repeats, got {out_indices}')
    if not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'frozen_stages must be in -1..{num_stages}, got {frozen_stages}')
