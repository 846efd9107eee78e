"""mmcv's ``DeformConv2d``, computed on CPU with PyTorch's own ops.

mmcv's CPU kernels for deformable convolution are plain loops, slow to train with on CPU
(docs/engineering_notes.md has the measurements). The same
convolution is a bilinear sampling of the input at the offset kernel positions
(``F.grid_sample``) followed by a matrix product with the flattened kernel, which autograd
differentiates with vectorised kernels. ``SampledDeformConv2d`` keeps mmcv's module (parameters,
checkpoints, the CUDA kernels on GPU) and takes that path on CPU. It is also what
``tools/get_flops.py`` counts: the matrix product has a FLOP formula, mmcv's op has none.
"""
import torch
import torch.nn.functional as F
from mmcv.ops import DeformConv2d
from torch import Tensor


def deform_conv2d_by_sampling(x: Tensor, offset: Tensor, weight: Tensor, stride=(1, 1), padding=(0, 0),
                              dilation=(1, 1)) -> Tensor:
    """Deformable convolution (one group, one offset group), as mmcv defines it.

    Args:
        x (Tensor): The input, shape (N, C, H, W).
        offset (Tensor): The sample shifts, shape (N, 2 * kh * kw, Ho, Wo): for kernel position
            k = i * kw + j, channel 2k is the shift in y and 2k + 1 the shift in x of the sample
            at (ho * stride - pad + i * dilation, wo * stride - pad + j * dilation).
        weight (Tensor): The kernel, shape (O, C, kh, kw).
        stride (tuple[int, int]): (y, x) strides. Defaults to (1, 1).
        padding (tuple[int, int]): (y, x) zero padding. Defaults to (0, 0).
        dilation (tuple[int, int]): (y, x) dilation. Defaults to (1, 1).

    Returns:
        Tensor: The output, shape (N, O, Ho, Wo). A sample is the bilinear interpolation of the
        four pixels around it, pixels outside the map counting as 0 (so a sample a pixel or more
        outside is 0).
    """
    num, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    if offset.shape != (num, 2 * kernel_h * kernel_w, out_h, out_w):
        raise ValueError(f'offset {tuple(offset.shape)} does not fit input {tuple(x.shape)} and kernel '
                         f'{kernel_h}x{kernel_w}: expected {(num, 2 * kernel_h * kernel_w, out_h, out_w)}')
    offset = offset.view(num, kernel_h * kernel_w, 2, out_h, out_w)
    kernel_y = (torch.arange(kernel_h, device=x.device, dtype=x.dtype) * dilation[0]).repeat_interleave(kernel_w)
    kernel_x = (torch.arange(kernel_w, device=x.device, dtype=x.dtype) * dilation[1]).repeat(kernel_h)
    grid_y = torch.arange(out_h, device=x.device, dtype=x.dtype) * stride[0] - padding[0]
    grid_x = torch.arange(out_w, device=x.device, dtype=x.dtype) * stride[1] - padding[1]
    ys = kernel_y[:, None, None] + grid_y[None, :, None] + offset[:, :, 0]  # (N, K, Ho, Wo)
    xs = kernel_x[:, None, None] + grid_x[None, None, :] + offset[:, :, 1]
    # grid_sample's pixel-centre convention (align_corners=False): pixel p sits at (2p + 1) / size - 1
    grid = torch.stack([(2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1], dim=-1)
    samples = F.grid_sample(x, grid.view(num, -1, out_w, 2), mode='bilinear', padding_mode='zeros',
                            align_corners=False)  # (N, C, K * Ho, Wo)
    columns = samples.view(num, channels * kernel_h * kernel_w, out_h * out_w)
    return torch.matmul(weight.view(out_channels, -1), columns).view(num, out_channels, out_h, out_w)


class SampledDeformConv2d(DeformConv2d):
    """mmcv's ``DeformConv2d``; on CPU, with one group and one offset group, computed by
    :func:`deform_conv2d_by_sampling` (the same result, faster to train).

    Its arguments, parameters and checkpoints are mmcv's ``DeformConv2d``'s.
    """

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        """The deformable convolution of ``x`` at the sample positions ``offset`` shifts.

        Args:
            x (Tensor): The input, shape (N, C, H, W).
            offset (Tensor): The sample shifts, shape (N, 2 * kh * kw, Ho, Wo), (y, x) per kernel
                position, as mmcv's ``DeformConv2d`` takes them.

        Returns:
            Tensor: The output, shape (N, out_channels, Ho, Wo).
        """
        if x.is_cuda or self.groups != 1 or self.deform_groups != 1:
            return super().forward(x, offset)
        return deform_conv2d_by_sampling(x, offset, self.weight, self.stride, self.padding, self.dilation)
