"""A register-blocked CPU kernel for the focal attention's forward, against mmfocal's kernels.

    python benchmarks/attention_kernel_prototype.py                     # Focal-T's stages at 512x512 and 224x224
    python benchmarks/attention_kernel_prototype.py --sizes 800x1344 --repeats 15

Not part of the package: the evidence for what docs/speed.md ("On an AVX-512 machine") names as
the way to Swin-T's speed at the small sizes. ``attention_kernel_prototype.cpp`` (built here with
``torch.utils.cpp_extension``, x86-64 with AVX2 and FMA, a C++20 compiler) computes softmax(q k^T +
bias + off_map) v for one (image, window, head) per task with its scores in registers; head dims
32, window 7, float32; its backward recomputes the attention as mmfocal's does and adds the key
gradients of a chunk of windows into the key source with the threads split by columns. For each
stage of Focal-T at each input size it builds the attention's real inputs (the key layout of that
map, random queries, keys and biases), checks the output and the gradients of q, the key source
and the bias against ``attend_with_standard_ops`` under autograd, and times the prototype against
mmfocal's kernels (forward: ``_attend_fused``, PyTorch's flash kernel over chunks of windows;
forward+backward: the ``'recompute'`` path) interleaved, printing the median of the rounds'
ratios with their range, as ``backbone_speed.py``.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.cpp_extension import load

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backbone_speed import machine_description, paired_ratio, ratio_text  # noqa: E402

from mmfocal.models.layers import attention_kernels  # noqa: E402
from mmfocal.models.layers.attention_kernels import default_chunk_bytes  # noqa: E402
from mmfocal.models.layers.key_layout import cached_key_layout  # noqa: E402

# Focal-T's attention: window 7, rolled reach 3, one pooled level with these neighbourhoods.
WINDOW, EXPAND, HEAD_DIMS = 7, 3, 32
HEADS = (3, 6, 12, 24)
FOCAL_WINDOWS = (7, 5, 3, 1)
PADDED_QUERIES = 56  # the kernel's 49 queries padded to 7 vectors of 8


def build_prototype():
    if platform.machine() != 'x86_64' or torch.backends.cpu.get_cpu_capability() not in ('AVX2', 'AVX512'):
        sys.exit(f'the prototype needs an x86-64 CPU with AVX2; this is {platform.machine()} with '
                 f'{torch.backends.cpu.get_cpu_capability()}')
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'attention_kernel_prototype.cpp')
    # PyTorch >= 2.14's headers need C++20; the vector headers' AVX2 code needs the macros; and
    # at::parallel_for is an OpenMP pragma in a header, which runs serially without -fopenmp.
    flags = ['-O3', '-std=c++20', '-fopenmp', '-mavx2', '-mfma', '-DCPU_CAPABILITY=AVX2', '-DCPU_CAPABILITY_AVX2']
    load('mmfocal_attention_prototype', [source], is_python_module=False, extra_cflags=flags,
         extra_ldflags=['-fopenmp'])
    return torch.ops.mmfocal_prototype.forward


def stage_inputs(size, stage: int, batch: int, generator: torch.Generator):
    """q, source, index, bias, off_map of Focal-T's attention at ``stage`` for an input of ``size``."""
    height, width = (-(-side // 4) for side in size)
    for _ in range(stage):
        height, width = -(-height // 2), -(-width // 2)
    rows, cols = -(-height // WINDOW), -(-width // WINDOW)
    with_rolled = min(height, width) > WINDOW  # the backbone's rule
    index, off_map = cached_key_layout(WINDOW, EXPAND, FOCAL_WINDOWS[stage], 1, rows, cols, with_rolled,
                                       torch.device('cpu'))
    windows, keys = off_map.shape
    heads = HEADS[stage]
    q = torch.randn(batch * windows, WINDOW**2, heads, HEAD_DIMS, generator=generator) * 0.3
    source = torch.randn(batch, int(index.max()) + 1, 2, heads, HEAD_DIMS, generator=generator)
    source[:, -1] = 0  # the zero token of off-map positions
    bias = torch.randn(heads, WINDOW**2, keys, generator=generator) * 0.1
    return q, source, index, bias, off_map.float()


def prototype_forward_backward(q, source, index, bias, off_map, grad_out):
    """The prototype's forward and backward: gradients of q, the key source and the bias."""
    bias_t = transposed_bias(bias)
    out, lse = torch.ops.mmfocal_prototype.forward(q, source, index, bias_t, off_map)
    windows, keys = off_map.shape
    chunk_windows = max(torch.get_num_threads(), default_chunk_bytes() // (keys * 2 * source.shape[3] * HEAD_DIMS * 4))
    grad_q, grad_source, grad_bias_t = torch.ops.mmfocal_prototype.backward(
        q, source, index, bias_t, off_map, out, lse, grad_out, chunk_windows)
    return grad_q, grad_source, grad_bias_t[:, :, :bias.shape[1]].transpose(1, 2)


def mmfocal_forward_backward(q, source, index, bias, off_map, grad_out):
    """mmfocal's training kernels (the 'recompute' path): gradients of q, the key source and the bias."""
    q, source, bias = (t.detach().requires_grad_() for t in (q, source, bias))
    out = attention_kernels._FocalAttentionCore.apply(q, source, index, bias, off_map, None)
    return torch.autograd.grad(out, (q, source, bias), grad_out)


def transposed_bias(bias: torch.Tensor) -> torch.Tensor:
    """(heads, 49, keys) -> (heads, keys, 56): the layout the prototype reads (part of its time)."""
    return F.pad(bias.transpose(1, 2), (0, PADDED_QUERIES - bias.shape[1])).contiguous()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['512x512', '224x224'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()
    prototype = build_prototype()
    print(f'device: {machine_description("cpu")}; torch {torch.__version__}; median of {args.repeats}')
    print(f'{"input":>12} {"stage":>5} {"windows":>7} {"keys":>4} {"max error":>10} {"pass":>8} {"mmfocal ms":>10} '
          f'{"prototype ms":>12} {"prototype/mmfocal":>20}')
    generator = torch.Generator().manual_seed(0)
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split('x'))
        for stage in range(len(HEADS)):
            q, source, index, bias, off_map = stage_inputs(size, stage, args.batch, generator)
            grad_out = torch.randn(q.shape, generator=generator)
            error = max_error(prototype, q, source, index, bias, off_map, grad_out)
            passes = {
                'fwd': {'mmfocal': lambda: attention_kernels._attend_fused(q, source, index, bias, off_map,
                                                                           need_lse=False),
                        'prototype': lambda: prototype(q, source, index, transposed_bias(bias), off_map)},
                'fwd+bwd': {'mmfocal': lambda: mmfocal_forward_backward(q, source, index, bias, off_map, grad_out),
                            'prototype': lambda: prototype_forward_backward(q, source, index, bias, off_map,
                                                                            grad_out)},
            }
            for pass_name, runners in passes.items():
                times = {name: [] for name in runners}
                for round_ in range(args.repeats + 1):  # the first round warms up
                    for name, run in runners.items():
                        begin = time.perf_counter()
                        run()
                        if round_:
                            times[name].append(time.perf_counter() - begin)
                print(f'{args.batch}x{size_text:>10} {stage + 1:>5} {off_map.shape[0]:>7} {off_map.shape[1]:>4} '
                      f'{error:>10.1e} {pass_name:>8} {statistics.median(times["mmfocal"]) * 1e3:>10.2f} '
                      f'{statistics.median(times["prototype"]) * 1e3:>12.2f} '
                      f'{ratio_text(paired_ratio(times["prototype"], times["mmfocal"])):>20}', flush=True)


def max_error(prototype, q, source, index, bias, off_map, grad_out) -> float:
    """The prototype's largest difference from the standard-ops attention, relative to each
    compared tensor's largest value: output, gradients of q, the key source (but the zero token,
    a constant) and the bias."""
    inputs = [t.detach().requires_grad_() for t in (q, source, bias)]
    expected_out = attention_kernels.attend_with_standard_ops(inputs[0], inputs[1], index, inputs[2], off_map)
    expected = [expected_out, *torch.autograd.grad(expected_out, inputs, grad_out)]
    out, _ = prototype(q, source, index, transposed_bias(bias), off_map)
    ours = [out, *prototype_forward_backward(q, source, index, bias, off_map, grad_out)]
    expected[2], ours[2] = expected[2][:, :-1], ours[2][:, :-1]
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, expected))

if __name__ == '__main__':
    main()
