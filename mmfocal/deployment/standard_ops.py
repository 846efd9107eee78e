"""Standard-op forms of layers that the TorchScript ONNX exporter cannot export for dynamic sizes.

``nn.AdaptiveAvgPool2d`` (UperNet's and PSPNet's pyramid pooling, scales 1, 2, 3 and 6) exports
only as a fixed ``AveragePool`` whose kernel the exporter computes from the traced size, and only
where each output size divides the input's. Adaptive average pooling is a linear map of each
axis, though: :class:`AdaptiveAvgPool2dMatmul` computes it as two matrix products whose
matrices are built in the graph from the input's size, so one dynamic file serves every size.
"""
import contextlib
from typing import Iterator, Sequence, Union

import torch
import torch.nn as nn


def adaptive_average_matrix(size, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The matrix of adaptive average pooling along one axis.

    Args:
        size (int | torch.Tensor): The axis' length: an int, or a traced size (the tracer's 0-d
            tensor; the matrix is built with tensor ops only).
        bins (int): The pooled length.
        dtype (torch.dtype): The matrix's dtype.
        device (torch.device): Its device.

    Returns:
        torch.Tensor: Shape (bins, size); row i averages the input positions
        ``[floor(i * size / bins), ceil((i + 1) * size / bins))``, PyTorch's adaptive pooling bins
        (they overlap where size is not a multiple of bins, and repeat positions where
        size < bins).
    """
    index = torch.arange(bins, device=device)
    start = torch.div(index * size, bins, rounding_mode='floor')
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode='floor')
    positions = torch.arange(size, device=device)
    inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


class AdaptiveAvgPool2dMatmul(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as ``P_h @ x @ P_w^T`` (MatMul, Range, comparisons).

    The same numbers up to float rounding, for any H, W.

    Args:
        output_size (int | Sequence[int]): The pooled (h, w), or one int for both.

    Shapes:
        - Input: (B, C, H, W).
        - Output: (B, C, h, w).
    """

    def __init__(self, output_size: Union[int, Sequence[int]]):
        super().__init__()
        sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(sizes) != 2 or not all(isinstance(s, int) and s >= 1 for s in sizes):
            raise ValueError(f'output_size must be a positive int or two of them (None, "keep the input\'s '
                             f'size", is not supported), got {output_size!r}')
        self.output_size = sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool ``x`` by two matrix products.

        Args:
            x (torch.Tensor): Shape (B, C, H, W).

        Returns:
            torch.Tensor: Shape (B, C, h, w).
        """
        rows = adaptive_average_matrix(x.shape[-2], self.output_size[0], x.dtype, x.device)
        cols = adaptive_average_matrix(x.shape[-1], self.output_size[1], x.dtype, x.device)
        return rows @ x @ cols.transpose(0, 1)

    def extra_repr(self) -> str:
        return f'output_size={self.output_size}'


@contextlib.contextmanager
def adaptive_pools_as_matmuls(module: nn.Module) -> Iterator[int]:
    """Within the ``with`` block, every ``nn.AdaptiveAvgPool2d`` of a module computed by matmuls.

    Args:
        module (nn.Module): The model; its pools are replaced by :class:`AdaptiveAvgPool2dMatmul`
            modules of their output sizes, and put back on exit.

    Yields:
        int: How many pools were replaced.
    """
    replaced = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                replaced.append((parent, name, child))
    try:
        for parent, name, child in replaced:
            setattr(parent, name, AdaptiveAvgPool2dMatmul(child.output_size))
        yield len(replaced)
    finally:
        for parent, name, child in replaced:
            setattr(parent, name, child)
