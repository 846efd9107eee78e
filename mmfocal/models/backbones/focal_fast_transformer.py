"""FocalFastTransformer backbone: the authors' faster Focal Transformer ("Focal-fast").

The same backbone as :class:`~.focal_transformer.FocalTransformer` (stem, stages, downsamples,
output norms, frozen stages, checkpointing, strict pretrained loading: one code path, in
:class:`~.focal_transformer.FocalBackbone`); only the blocks differ: their attention is
:class:`~mmfocal.models.layers.focal_fast_attention.FocalFastAttention`. Parameter names follow
the official ``classification/focal_transformer_v2.py``, so the three published Focal-fast
checkpoints (focalv2-{tiny,small,base}-useconv-is224-ws7.pth) load as published.
"""
from typing import Optional, Sequence, Union

from ..layers.focal_fast_attention import FocalFastTransformerBlock
from .focal_transformer import FocalBackbone


class FocalFastTransformer(FocalBackbone):
    """Focal-fast backbone: the authors' faster Focal Transformer.

    Each window attends to the ``focal_topk`` map tokens and pooled window tokens nearest to it,
    with MLP position biases. Any input size runs: the neighbour sets come from the actual map of
    each stage by the official rule
    (:func:`~mmfocal.models.layers.fast_key_layout.compute_fast_key_layout`).

    Args:
        arch (str | dict, optional): ``'tiny'``, ``'small'`` or ``'base'`` (the published sizes,
            those of :class:`~.focal_transformer.FocalTransformer`), or a dict of ``embed_dims``,
            ``depths`` and ``num_heads``; None: the sizes given. Defaults to None.
        embed_dims (int, optional): As FocalTransformer's. Defaults to None.
        depths (Sequence[int], optional): As FocalTransformer's. Defaults to None.
        num_heads (Sequence[int], optional): As FocalTransformer's. Defaults to None.
        window_size (int): The query window, tokens per side; never shrinks (maps are padded to
            it). Defaults to 7.
        mlp_ratio (float): As FocalTransformer's. Defaults to 4.
        qkv_bias (bool): As FocalTransformer's. Defaults to True.
        qk_scale (float, optional): As FocalTransformer's. Defaults to None.
        drop_rate (float): As FocalTransformer's. Defaults to 0.
        attn_drop_rate (float): As FocalTransformer's. Defaults to 0.
        drop_path_rate (float): As FocalTransformer's. Defaults to 0.2.
        focal_levels (Sequence[int]): Per stage, 1 (map tokens only) or 2 (and the pooled window
            tokens). Defaults to (2, 2, 2, 2).
        focal_topk (int): Keys per level. Defaults to 128, the published models'.
        focal_pool (str): How a window is pooled to one token: ``'fc'`` (published), ``'conv'``,
            ``'mean'``, ``'max'``, or ``'none'`` (no pooled level). Defaults to ``'fc'``.
        use_conv_embed (bool): The overlapping conv stem and downsamples (all published
            checkpoints). Defaults to True.
        patch_size (int): As FocalTransformer's. Defaults to 4.
        in_channels (int): As FocalTransformer's. Defaults to 3.
        out_indices (Sequence[int]): As FocalTransformer's. Defaults to (0, 1, 2, 3).
        frozen_stages (int): As FocalTransformer's. Defaults to -1.
        with_cp (bool): As FocalTransformer's. Defaults to False.
        init_cfg (dict | list[dict], optional): As FocalTransformer's. Defaults to None.

    Shapes:
        - Input: (B, in_channels, H, W), floating point, any H, W >= 1.
        - Output: a tuple with, for each i in ``out_indices``, (B, embed_dims * 2**i,
          ceil(H / 2**(i+2)), ceil(W / 2**(i+2))), each after its own LayerNorm. B = 0 (no
          images) gives empty maps of those shapes.

    Examples:
        >>> import torch
        >>> from mmfocal.models.backbones import FocalFastTransformer
        >>> model = FocalFastTransformer(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
        ...                              focal_topk=16).eval()
        >>> with torch.no_grad():
        ...     outs = model(torch.randn(1, 3, 64, 96))
        >>> [tuple(out.shape) for out in outs]
        [(1, 16, 16, 24), (1, 32, 8, 12), (1, 64, 4, 6), (1, 128, 2, 3)]
        >>> FocalFastTransformer('tiny').num_features  # the published sizes
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
                 focal_topk: int = 128,
                 focal_pool: str = 'fc',
                 use_conv_embed: bool = True,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Union[dict, list, None] = None):
        self.focal_topk = focal_topk

        def make_block(stage, index, dims, heads, drop_path):
            """Block ``index`` of stage ``stage``, as :class:`FocalBackbone` asks for it.

            Args:
                stage (int): The stage, from 0.
                index (int): The block within the stage, from 0 (every block of a stage is alike).
                dims (int): The stage's channels.
                heads (int): The stage's attention heads.
                drop_path (float): The block's stochastic depth rate.

            Returns:
                FocalFastTransformerBlock: The block.
            """
            return FocalFastTransformerBlock(
                dims, heads, window_size=window_size, focal_level=focal_levels[stage], topk=focal_topk,
                pool_method=focal_pool, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop=drop_rate, attn_drop=attn_drop_rate, drop_path=drop_path)

        super().__init__(make_block, arch=arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, use_conv_embed=use_conv_embed,
                         patch_size=patch_size, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, with_cp=with_cp, init_cfg=init_cfg,
                         stage_settings=dict(focal_levels=focal_levels))
