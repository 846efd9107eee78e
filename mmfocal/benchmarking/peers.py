"""The backbones the benchmarks compare: Focal-T, Focal-fast-T and mmdet's Swin-T, built alike."""
import torch

from ..errors import BadArgumentError
from ..models.backbones import FocalFastTransformer, FocalTransformer

__all__ = ['SWIN_T', 'LABELS', 'build_backbone']

# mmdet's Swin-T at the sizes of Focal-T: embed dims 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24).
SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
              drop_path_rate=0.2, out_indices=(0, 1, 2, 3))

LABELS = {'focal': 'Focal-T', 'fast': 'Focal-fast-T', 'swin': 'Swin-T'}


def build_backbone(name: str, device: str = 'cpu', drop_path_rate: float = 0.2) -> torch.nn.Module:
    """One of the compared backbones with random weights.

    Args:
        name (str): ``'focal'`` (Focal-T), ``'fast'`` (Focal-fast-T, its published conv embedding
            and 128 nearest keys per level) or ``'swin'`` (mmdet's Swin-T, :data:`SWIN_T`).
        device (str): Where the model goes. Defaults to ``'cpu'``.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.2, the detection configs'.

    Returns:
        torch.nn.Module: The backbone on ``device``, in train mode.
    """
    if name == 'focal':
        model = FocalTransformer(arch='tiny', drop_path_rate=drop_path_rate)
    elif name == 'fast':
        model = FocalFastTransformer(arch='tiny', drop_path_rate=drop_path_rate)
    elif name == 'swin':
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(**dict(SWIN_T, drop_path_rate=drop_path_rate))
    else:
        raise BadArgumentError(f'unknown backbone {name!r}; expected one of {", ".join(LABELS)}')
    return model.to(device)
