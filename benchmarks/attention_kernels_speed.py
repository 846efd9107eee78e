"""mmfocal's compiled CPU attention kernels against PyTorch's, at each stage of Focal-T.

    python benchmarks/attention_kernels_speed.py                     # Focal-T's stages at 512x512 and 224x224
    python benchmarks/attention_kernels_speed.py --sizes 800x1344 --repeats 15

The attention alone (``attention_kernels.attend``), with its real inputs: those of the first block
of each stage of Focal-T (random weights) at each input size, taken from a forward pass. Times the two CPU
routes of ``attention_path(kernels=...)``: ``'compiled'``, mmfocal's kernels
(``mmfocal/models/layers/csrc/focal_attention_cpu.cpp``, built on first use), and ``'cpu'``,
PyTorch's flash kernel over chunks of windows with mmfocal's recomputing backward; forward without
gradients and forward+backward, interleaved, printing the median of the rounds' ratios with their
range, as ``backbone_speed.py``, and the largest difference of the compiled route's output and
gradients from the other's (relative to each tensor's largest value).
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn

from mmfocal.benchmarking.timing import machine_description, paired_ratio, ratio_text
from mmfocal.models.backbones import FocalTransformer
from mmfocal.models.layers import attention_path, compiled_kernels, focal_attention
from mmfocal.models.layers.attention_kernels import attend

ROUTES = ('cpu', 'compiled')
NO_DROPOUT = nn.Dropout(0.0)


def stage_inputs(size, batch: int, generator: torch.Generator) -> list:
    """q, source, index, bias, off_map of the first block's attention of each stage of Focal-T
    (random weights) for a random input of ``size``: taken from a forward pass of the backbone, so
    each stage's map, windows, keys and biases are the backbone's own."""
    model = FocalTransformer(arch='tiny').eval()
    first_blocks = {id(stage.blocks[0].attn) for stage in model.layers}
    calls = []

    def keep_inputs(q, source, index, bias, off_map, *args, **kwargs):
        calls.append(tuple(t.detach().clone() for t in (q, source, index, bias, off_map)))
        return attend(q, source, index, bias, off_map, *args, **kwargs)

    hooks = [module.register_forward_pre_hook(lambda module, args: calls.append(module))
             for module in model.modules() if id(module) in first_blocks]
    focal_attention.attend = keep_inputs  # the attention module's call, for this one pass
    try:
        with torch.no_grad():
            model(torch.randn(batch, 3, *size, generator=generator))
    finally:
        focal_attention.attend = attend
        for hook in hooks:
            hook.remove()
    # each first block's attention module, then its call's inputs
    return [calls[i + 1] for i, call in enumerate(calls) if isinstance(call, nn.Module)]


def run(route: str, inputs, grad_out, backward: bool):
    """The attention on ``route``: the output, and with ``backward`` the gradients of q, the key
    source and the bias."""
    q, source, index, bias, off_map = inputs
    with attention_path(kernels=route):
        if not backward:
            with torch.no_grad():
                return attend(q, source, index, bias, off_map, NO_DROPOUT, training=False)[0],
        q, source, bias = (t.detach().requires_grad_() for t in (q, source, bias))
        out = attend(q, source, index, bias, off_map, NO_DROPOUT, training=True)[0]
        return (out, *torch.autograd.grad(out, (q, source, bias), grad_out))


def largest_difference(inputs, grad_out) -> float:
    compiled, cpu = (run(route, inputs, grad_out, backward=True) for route in ('compiled', 'cpu'))
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(compiled, cpu))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['512x512', '224x224'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()
    reason = compiled_kernels.unavailable_reason()
    if reason:
        sys.exit(f'the compiled kernels are not available here: {reason}')
    print(f'device: {machine_description("cpu")}; torch {torch.__version__}; median of {args.repeats}')
    print(f'{"input":>12} {"stage":>5} {"windows":>7} {"keys":>4} {"difference":>10} {"pass":>8} {"PyTorch ms":>10} '
          f'{"compiled ms":>11} {"compiled/PyTorch":>20}')
    generator = torch.Generator().manual_seed(0)
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split('x'))
        for stage, inputs in enumerate(stage_inputs(size, args.batch, generator)):
            grad_out = torch.randn(inputs[0].shape, generator=generator)
            difference = largest_difference(inputs, grad_out)
            windows, keys = inputs[-1].shape
            for backward in (False, True):
                times = {route: [] for route in ROUTES}
                for round_ in range(args.repeats + 1):  # the first round warms up
                    for route in ROUTES:
                        begin = time.perf_counter()
                        run(route, inputs, grad_out, backward)
                        if round_:
                            times[route].append(time.perf_counter() - begin)
                print(f'{args.batch}x{size_text:>10} {stage + 1:>5} {windows:>7} {keys:>4} {difference:>10.1e} '
                      f'{"fwd+bwd" if backward else "fwd":>8} {statistics.median(times["cpu"]) * 1e3:>10.2f} '
                      f'{statistics.median(times["compiled"]) * 1e3:>11.2f} '
                      f'{ratio_text(paired_ratio(times["compiled"], times["cpu"])):>20}', flush=True)


if __name__ == '__main__':
    main()
