"""FocalTransformer backbone: multi-scale NCHW feature maps for detection and segmentation.

Built from :mod:`mmfocal.models.layers.focal_attention`; parameter names follow the official model
(``patch_embed``, ``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``) so its ImageNet
checkpoints load as published. Adds what dense prediction needs: any input size, one LayerNorm
per output (``norm{i}``), frozen stages, activation checkpointing and strict pretrained loading.
"""
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule

from ...errors import BadArgumentError
from ..checkpoints import load_pretrained
from ..layers.block import FocalBlockBase
from ..layers.focal_attention import FocalTransformerBlock
from ..layers.tracing import is_tracing

ARCH_SETTINGS = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    # Never published: Swin-L's widths, inferred from the sizes of the paper's Focal-L systems
    # (docs/det_results.md, "Focal-L's definition").
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
EXPAND_LAYERS = ('all', 'even', 'odd')


class PatchEmbed(nn.Module):
    """A strided conv, then LayerNorm: the stem, and the downsample between stages.

    The input is zero-padded at the bottom and right to a multiple of the stride first, as mmdet's
    Swin does.

    Args:
        in_channels (int): Channels of the input.
        embed_dims (int): Channels of the output.
        stride (int): The conv's stride.
        use_conv_embed (bool): The official overlapping convs (7x7, padding 2 for the stem; 3x3,
            padding 1 between stages) if True; else patches, kernel = stride. Defaults to False.
        is_stem (bool): The stem's conv (with ``use_conv_embed``). Defaults to False.

    Shapes:
        - Input: (B, in_channels, H, W).
        - Output: (B, ceil(H / stride), ceil(W / stride), embed_dims), channels last.
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
        if use_conv_embed:
            # The maps come in as channels-last views of (B, H, W, C) and leave as (B, H', W', C').
            # With a channels-last weight the CPU (oneDNN) conv stays in that layout and returns
            # its weight gradient without a reorder, which cost as much as the conv itself
            # (measured: docs/engineering_notes.md).
            self.proj.to(memory_format=torch.channels_last)
        self.norm = nn.LayerNorm(embed_dims)
        self.patchify = not use_conv_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, project and normalise.

        Args:
            x (torch.Tensor): The input, shape (B, in_channels, H, W).

        Returns:
            torch.Tensor: Shape (B, ceil(H / stride), ceil(W / stride), embed_dims), channels last.
        """
        s = self.stride
        H, W = x.shape[2:]
        pad_b, pad_r = (H + s - 1) // s * s - H, (W + s - 1) // s * s - W
        if is_tracing(x) or pad_b or pad_r:  # traced: no branch on a (symbolic) size
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
    """One stage: focal blocks, then (except in the last stage) a 2x downsample.

    Args:
        blocks (Sequence[FocalBlockBase]): The stage's blocks.
        downsample (PatchEmbed, optional): The downsample to the next stage; None in the last.
        with_cp (bool): Activation checkpointing per block. Defaults to False.

    Shapes:
        - Input: (B, H, W, C), channels last.
        - Output: the stage's output (B, H, W, C) and the next stage's input
          (B, ceil(H / 2), ceil(W / 2), 2C), or None after the last stage.
    """

    def __init__(self, blocks: Sequence[FocalBlockBase], downsample: Optional[PatchEmbed],
                 with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run the blocks, then the downsample.

        Args:
            x (torch.Tensor): The stage's input, shape (B, H, W, C).

        Returns:
            tuple[torch.Tensor, torch.Tensor | None]: The stage's output (B, H, W, C) and the next
            stage's input (B, ceil(H / 2), ceil(W / 2), 2C), or None after the last stage.
        """
        # A batch of no images (x.shape[0] == 0) skips the blocks: each maps a map to one of its
        # shape, so their output is the empty input itself, which their window reshapes (sizes
        # inferred from the elements) cannot take. Traced, no branch on the (symbolic) batch size.
        blocks = self.blocks if is_tracing(x) or x.shape[0] else []
        for block in blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if self.downsample is None:
            return x, None
        return x, self.downsample(x.permute(0, 3, 1, 2))


class FocalBackbone(BaseModule):
    """What the Focal backbones share; a subclass differs only in its blocks.

    The arch sizes, the stem, the stages of blocks with their downsamples, the output norms,
    frozen stages, activation checkpointing and strict pretrained loading. The blocks check their
    own arguments. :class:`FocalTransformer` documents the arguments in full.

    Args:
        make_block (Callable[..., nn.Module]): ``make_block(stage, index, dims, num_heads,
            drop_path)`` builds block ``index`` of stage ``stage``.
        arch (str | dict, optional): A name of ``arch_settings`` or a dict of ``embed_dims``,
            ``depths`` and ``num_heads``; None: the sizes given, the tiny sizes where not given.
            An explicit size that contradicts it is an error.
        embed_dims (int, optional): Channels of stage 1 (None: from ``arch``).
        depths (Sequence[int], optional): Blocks per stage (None: from ``arch``).
        num_heads (Sequence[int], optional): Attention heads per stage (None: from ``arch``).
        drop_rate (float): Dropout after the stem.
        drop_path_rate (float): Stochastic depth of the last block, in [0, 1), rising linearly
            from 0 over all blocks.
        use_conv_embed (bool): The overlapping conv stem and downsamples.
        patch_size (int): The stem's stride.
        in_channels (int): Channels of the input images.
        out_indices (Sequence[int]): The stages whose outputs are returned.
        frozen_stages (int): -1 freezes nothing, 0 the stem, i the stem and stages 0..i-1.
        with_cp (bool): Activation checkpointing per block.
        init_cfg (dict | list[dict], optional): The weights, as :class:`FocalTransformer`'s.
        stage_settings (dict, optional): The subclass's other per-stage sequences, by name,
            checked for one non-negative integer per stage. Defaults to None.
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self, make_block: Callable[..., nn.Module], *, arch: Union[str, dict, None],
                 embed_dims: Optional[int], depths: Optional[Sequence[int]], num_heads: Optional[Sequence[int]],
                 drop_rate: float, drop_path_rate: float, use_conv_embed: bool, patch_size: int, in_channels: int,
                 out_indices: Sequence[int], frozen_stages: int, with_cp: bool, init_cfg: Union[dict, list, None],
                 stage_settings: Optional[dict] = None):
        init_cfg = _check_init_cfg(init_cfg)
        super().__init__(init_cfg=init_cfg)
        embed_dims, depths, num_heads = self._resolve_arch(arch, embed_dims, depths, num_heads)
        out_indices = tuple(out_indices)
        per_stage = dict(depths=depths, num_heads=num_heads, **{k: tuple(v) for k, v in (stage_settings or {}).items()})
        _check_arguments(embed_dims, per_stage, in_channels, patch_size, out_indices, frozen_stages)
        if not 0 <= drop_path_rate < 1:
            raise BadArgumentError(f'drop_path_rate must be in [0, 1) (the last block\'s probability of dropping its '
                                   f'residual branches), got {drop_path_rate!r}')
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
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dims = self.num_features[i]
            first = sum(depths[:i])
            blocks = [make_block(i, j, dims, heads, drop_path_rates[first + j]) for j in range(depth)]
            downsample = (PatchEmbed(dims, 2 * dims, 2, use_conv_embed)
                          if i < self.num_stages - 1 else None)
            self.layers.append(FocalStage(blocks, downsample, with_cp))
        for i in out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self.apply(_init_like_official)
        self._freeze_stages()

    def _resolve_arch(self, arch, embed_dims, depths, num_heads):
        """(embed_dims, depths, num_heads) from ``arch`` and the explicit sizes (None: not given)."""
        given = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        given = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in given.items() if v is not None}
        if arch is None:
            return tuple({**self.arch_settings['tiny'], **given}[k] for k in ('embed_dims', 'depths', 'num_heads'))
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise BadArgumentError(f'arch must be one of {sorted(self.arch_settings)}, a dict of sizes or None, '
                                 f'got {arch!r}')
            settings = self.arch_settings[arch]
        elif isinstance(arch, dict):
            missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
            unknown = set(arch) - {'embed_dims', 'depths', 'num_heads'}
            if missing or unknown:
                raise BadArgumentError(f'an arch dict needs exactly embed_dims, depths and num_heads; '
                                 f'missing {sorted(missing)}, unknown {sorted(unknown)}')
            settings = arch
        else:
            raise TypeError(f'arch must be a name, a dict of sizes or None, got {type(arch).__name__}')
        settings = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in settings.items()}
        contradictions = [f'{k}={v!r} (arch {arch!r} has {settings[k]!r})' for k, v in given.items()
                          if v != settings[k]]
        if contradictions:
            raise BadArgumentError(f'{type(self).__name__}: arch={arch!r} contradicts the sizes given: '
                             + ', '.join(contradictions) + '; give either arch or the sizes (arch=None)')
        return settings['embed_dims'], settings['depths'], settings['num_heads']

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The normalised outputs of the stages in ``out_indices``.

        Args:
            x (torch.Tensor): Images, shape (B, in_channels, H, W), floating point.

        Returns:
            tuple[torch.Tensor, ...]: For each i in ``out_indices``, shape
            (B, embed_dims * 2**i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) with the default
            ``patch_size`` of 4.

        Raises:
            BadArgumentError: If ``x`` is not 4-D, has another channel count than ``in_channels``,
                is empty or is not floating point.
        """
        name = type(self).__name__
        if x.dim() != 4:
            raise BadArgumentError(f'{name} expects a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise BadArgumentError(f'{name} was built with in_channels={self.in_channels}, '
                             f'but the input has {x.shape[1]} channels (shape {tuple(x.shape)})')
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise BadArgumentError(f'{name} got an empty image of shape {tuple(x.shape)}')
        if not x.is_floating_point():
            raise BadArgumentError(f'{name} takes floating-point images, got {x.dtype} (shape {tuple(x.shape)}): '
                                   'convert them first, as the data preprocessors of mmdet, mmseg and mmpretrain do')
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.out_indices:
                outs.append(_channels_first(getattr(self, f'norm{i}')(out)))
        return tuple(outs)

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            _freeze(self.patch_embed)
        for i in range(self.frozen_stages):
            _freeze(self.layers[i])
            if i in self.out_indices:
                _freeze(getattr(self, f'norm{i}'))

    def train(self, mode: bool = True):
        """Set the training mode, keeping the frozen stages in eval mode.

        Args:
            mode (bool): Training mode if True, else eval mode. Defaults to True.

        Returns:
            FocalBackbone: ``self``.
        """
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self):
        """mmengine's initialisers of ``init_cfg``, then the strict loader for a 'Pretrained' entry."""
        original = self.init_cfg
        configs = original if isinstance(original, list) else [original] if original else []
        pretrained = [c for c in configs if c.get('type') == 'Pretrained']
        others = [c for c in configs if c.get('type') != 'Pretrained']
        if others or not pretrained:
            self.init_cfg = others or None  # mmengine's own Pretrained loader would not be strict
            try:
                super().init_weights()
            finally:
                self.init_cfg = original
        if pretrained:
            load_pretrained(self, pretrained[0]['checkpoint'], map_location='cpu', prefix=pretrained[0].get('prefix'),
                            resize_position_tables=pretrained[0].get('resize_position_tables', False))
            self._is_init = True


class FocalTransformer(FocalBackbone):
    """Focal Transformer backbone, the official v1 model's math.

    A PyTorch implementation of `Focal Self-attention for Local-Global Interactions in Vision
    Transformers <https://arxiv.org/abs/2107.00641>`_ (Yang et al., NeurIPS 2021) for dense
    prediction: any input size, one LayerNorm per output, frozen stages, activation checkpointing
    and strict loading of the published ImageNet checkpoints.

    Args:
        arch (str | dict, optional): The sizes. A name: ``'tiny'``, ``'small'`` or ``'base'``
            (the published sizes) or ``'large'`` (Swin-L's widths: Focal-L was never published;
            docs/det_results.md says how its sizes were inferred). A dict: exactly the keys
            ``embed_dims``, ``depths`` and ``num_heads``. None: the sizes given, the tiny sizes
            where not given. A size given that differs from the arch's is an error.
            Defaults to None.
        embed_dims (int, optional): Channels of stage 1; stage i has ``embed_dims * 2**i``.
            Defaults to None (from ``arch``).
        depths (Sequence[int], optional): Blocks per stage. Defaults to None (from ``arch``).
        num_heads (Sequence[int], optional): Attention heads per stage. Defaults to None
            (from ``arch``).
        window_size (int): The query window, tokens per side. Defaults to 7.
        mlp_ratio (float): Hidden channels of the MLPs over their input channels. Defaults to 4.
        qkv_bias (bool): Biases in the query, key and value projection. Defaults to True.
        qk_scale (float, optional): Scale of the attention logits. Defaults to None
            (``head_dims ** -0.5``).
        drop_rate (float): Dropout after the stem and in the blocks. Defaults to 0.
        attn_drop_rate (float): Dropout of the attention weights. Defaults to 0.
        drop_path_rate (float): Stochastic depth of the last block, in [0, 1), rising linearly
            from 0 over all blocks. Defaults to 0.2.
        focal_levels (Sequence[int]): Focal levels per stage, the fine one included (2: the fine
            level and one pooled level). Defaults to (2, 2, 2, 2).
        focal_windows (Sequence[int]): The pooled neighbourhood per stage, in sub-windows per
            side (odd). Defaults to (7, 5, 3, 1).
        expand_sizes (Sequence[int]): How far past its window each query window reaches for
            rolled neighbour keys, per stage. Defaults to (3, 3, 3, 3).
        expand_layer (str): The blocks that take rolled neighbour keys: ``'all'``, ``'even'``
            or ``'odd'``. Defaults to ``'all'``.
        focal_pool (str): How a sub-window is pooled to one token: ``'fc'`` (published),
            ``'conv'``, ``'mean'``, ``'max'``, or ``'none'`` (no pooled levels). Defaults to ``'fc'``.
        use_conv_embed (bool): The overlapping conv stem and downsamples (the ``-useconv``
            checkpoints). Defaults to False.
        patch_size (int): The stem's stride. Defaults to 4.
        in_channels (int): Channels of the input images. Defaults to 3.
        out_indices (Sequence[int]): The stages whose outputs are returned, increasing.
            Defaults to (0, 1, 2, 3).
        frozen_stages (int): -1 freezes nothing, 0 the stem, i the stem and stages 0..i-1
            (eval mode, no gradients). Defaults to -1.
        with_cp (bool): Activation checkpointing per block (less memory, more time).
            Defaults to False.
        init_cfg (dict | list[dict], optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL)``
            loads an official ImageNet checkpoint (or one of ours, or PaddleViT's ``.pdparams``
            port) strictly (:mod:`mmfocal.models.checkpoints`); ``resize_position_tables=True``
            in it loads a checkpoint made with another ``window_size``, ``focal_windows`` or
            ``expand_sizes`` with its relative-position tables and 'fc' pooling weights resized
            by bicubic interpolation, each named in the load log (without it they are a
            ``CheckpointMismatchError``). A list may add mmengine initialisers, applied before the
            checkpoint. Defaults to None.

    Shapes:
        - Input: (B, in_channels, H, W), floating point, any H, W >= 1.
        - Output: a tuple with, for each i in ``out_indices``, (B, embed_dims * 2**i,
          ceil(H / 2**(i+2)), ceil(W / 2**(i+2))), each after its own LayerNorm. B = 0 (no
          images) gives empty maps of those shapes.

    Examples:
        >>> import torch
        >>> from mmfocal.models.backbones import FocalTransformer
        >>> model = FocalTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)).eval()
        >>> with torch.no_grad():
        ...     outs = model(torch.randn(1, 3, 64, 96))
        >>> [tuple(out.shape) for out in outs]
        [(1, 16, 16, 24), (1, 32, 8, 12), (1, 64, 4, 6), (1, 128, 2, 3)]
        >>> FocalTransformer('tiny').num_features  # the published sizes
        [96, 192, 384, 768]
    """

    def __init__(self,
                 arch: Union[str, dict, None] = None,
                 *,
                 embed_dims: Optional[int] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
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
                 init_cfg: Union[dict, list, None] = None):
        if expand_layer not in EXPAND_LAYERS:
            raise BadArgumentError(f'expand_layer must be one of {EXPAND_LAYERS}, got {expand_layer!r}')
        no_expand_parity = {'all': None, 'even': 0, 'odd': 1}[expand_layer]

        def make_block(stage, index, dims, heads, drop_path):
            """Block ``index`` of stage ``stage``, as :class:`FocalBackbone` asks for it.

            Args:
                stage (int): The stage, from 0.
                index (int): The block within the stage, from 0; with ``expand_layer`` it decides
                    whether the block takes rolled neighbour keys.
                dims (int): The stage's channels.
                heads (int): The stage's attention heads.
                drop_path (float): The block's stochastic depth rate.

            Returns:
                FocalTransformerBlock: The block.
            """
            return FocalTransformerBlock(
                dims, heads, window_size=window_size,
                expand_size=0 if index % 2 == no_expand_parity else expand_sizes[stage],
                focal_window=focal_windows[stage], focal_level=focal_levels[stage], pool_method=focal_pool,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                attn_drop=attn_drop_rate, drop_path=drop_path)

        super().__init__(make_block, arch=arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, use_conv_embed=use_conv_embed,
                         patch_size=patch_size, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, with_cp=with_cp, init_cfg=init_cfg,
                         stage_settings=dict(focal_levels=focal_levels, focal_windows=focal_windows,
                                             expand_sizes=expand_sizes))


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, C, H, W), contiguous. Always a copy: ``.contiguous()`` would first check
    whether the permuted map already is (it is when H = W = 1), a guard on the sizes that makes
    torch.compile recompile when a stage map reaches one token."""
    return x.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)


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


def _check_init_cfg(init_cfg):
    """None, a dict or a list of dicts, each with a 'type'; at most one 'Pretrained'."""
    if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
        raise TypeError(f'init_cfg must be a dict, a list of dicts or None, got {type(init_cfg).__name__}')
    configs = init_cfg if isinstance(init_cfg, list) else [init_cfg] if init_cfg is not None else []
    if any(not isinstance(c, dict) or 'type' not in c for c in configs):
        raise TypeError(f'every init_cfg entry must be a dict with a type, got {configs}')
    pretrained = [c for c in configs if c['type'] == 'Pretrained']
    if len(pretrained) > 1:
        raise BadArgumentError(f'init_cfg names {len(pretrained)} Pretrained checkpoints; give one')
    if pretrained and 'checkpoint' not in pretrained[0]:
        raise BadArgumentError(f'a Pretrained init_cfg needs a checkpoint, got {pretrained[0]}')
    return configs[0] if isinstance(init_cfg, list) and len(configs) == 1 else init_cfg


def _check_arguments(embed_dims, per_stage, in_channels, patch_size, out_indices, frozen_stages):
    """The backbone's own arguments: sizes, one entry per stage, stem, outputs and frozen stages."""
    lengths = {name: len(v) for name, v in per_stage.items()}
    if len(set(lengths.values())) != 1:
        raise BadArgumentError(f'per-stage settings must have one entry per stage; got lengths {lengths}')
    depths, num_heads = per_stage['depths'], per_stage['num_heads']
    num_stages = lengths['depths']
    if num_stages == 0:
        raise BadArgumentError('depths must name at least one stage')
    for name, values in per_stage.items():
        if any(not isinstance(v, int) or v < 0 for v in values):
            raise BadArgumentError(f'{name} must be non-negative integers, got {values}')
    if any(d < 1 for d in depths) or any(h < 1 for h in num_heads):
        raise BadArgumentError(f'every stage needs depth >= 1 and num_heads >= 1, got depths={depths}, '
                         f'num_heads={num_heads}')
    for i, heads in enumerate(num_heads):
        if (embed_dims * 2**i) % heads:
            raise BadArgumentError(f'stage {i} has {embed_dims * 2**i} channels (embed_dims={embed_dims} * 2**{i}), '
                             f'not divisible by num_heads[{i}]={heads}')
    if in_channels < 1 or patch_size < 1:
        raise BadArgumentError(f'in_channels and patch_size must be positive, got {in_channels}, {patch_size}')
    if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
        raise BadArgumentError(f'out_indices must be a non-empty subset of 0..{num_stages - 1}, got {out_indices}')
    if list(out_indices) != sorted(set(out_indices)):
        raise BadArgumentError(f'out_indices must be increasing without repeats, got {out_indices}')
    if not -1 <= frozen_stages <= num_stages:
        raise BadArgumentError(f'frozen_stages must be in -1..{num_stages}, got {frozen_stages}')
