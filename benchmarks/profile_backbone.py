"""Where Focal-T's time goes against Swin-T's, by kind of operator, at each input size.

    python benchmarks/profile_backbone.py                            # 800x1344, 512x512, 224x224; batch 1
    python benchmarks/profile_backbone.py --sizes 512x512 --passes fwd+bwd --top 15

The backbones of ``backbone_speed.py`` (same settings, same passes), run under ``torch.profiler``
after warm-up. For each size and pass it prints, per model, the wall time of one unprofiled run,
the number of operator calls and the self time of the operators grouped by kind (matrix products,
the fused attention kernel, gathers and scatters, copies and layout, softmax, norms, the rest),
then the kind-by-kind difference Focal-T minus Swin-T. What does not show in any operator's self
time (Python, the dispatcher, the allocator) is the wall time minus the operators' total, with
the profiler's own cost removed by scaling: the figures are for comparing the models, not exact.
``--top`` also lists the most expensive operators of Focal-T.

``--chunk-sweep`` instead times Focal-T (interleaved, median of ``--repeats``) with the CPU
kernels' chunks of windows set to several sizes (``attention_path(chunk_bytes=...)``) against the
size the kernels derive from this machine's caches by default, to show how much the chunking
matters here.
"""
import argparse
import collections
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mmfocal.analysis.flops import FUSED_ATTENTION_OPS
from mmfocal.benchmarking.peers import LABELS, build_backbone
from mmfocal.benchmarking.timing import machine_description, paired_ratio, ratio_text, step

# Operator kinds by aten name (without 'aten::' and an in-place variant's trailing '_'); the
# fused attention kernels are those mmfocal's FLOP counter knows.
KINDS = (
    ('matrix products', ('addmm', 'mm', 'bmm', 'baddbmm', 'matmul', 'linear', '_addmm_activation')),
    ('gather/scatter', ('index_select', 'index_add', 'index_copy', 'index', 'index_put', '_index_put_impl', 'gather',
                        'scatter', 'scatter_add', 'embedding')),
    ('copies/layout', ('copy', 'clone', 'contiguous', 'cat', 'constant_pad_nd', 'pad', 'roll', 'fill', 'zero', 'zeros',
                       'zeros_like', 'empty', 'new_empty', 'new_zeros', 'ones', 'full', 'arange', 'to', '_to_copy',
                       'empty_strided', 'empty_like', 'narrow', 'split_with_sizes_copy', 'unbind_copy')),
    ('softmax/exp', ('_softmax', 'softmax', '_softmax_backward_data', 'exp', 'logsumexp')),
    ('norms', ('native_layer_norm', 'native_layer_norm_backward', 'layer_norm')),
    ('gelu', ('gelu', 'gelu_backward')),
    ('elementwise/reductions', ('add', 'mul', 'sub', 'div', 'sum', 'mean', 'einsum', 'bernoulli', 'where', 'any',
                                'masked_fill', 'neg', 'rsub', 'lt', 'ge', 'eq', 'ne', 'linalg_vecdot')),
)
# mmfocal's compiled CPU attention kernels (mmfocal/models/layers/compiled_kernels/), which
# FocalTransformer's attention takes on the CPU by default.
COMPILED_ATTENTION_OPS = ('mmfocal_cpu::focal_attention_forward', 'mmfocal_cpu::focal_attention_backward')
ATTENTION = 'attention kernel'
OTHER = 'other operators'
UNACCOUNTED = 'outside operators'


def kind_of(name: str) -> str:
    if name in FUSED_ATTENTION_OPS or name in COMPILED_ATTENTION_OPS:
        return ATTENTION
    base = name.split('::', 1)[-1].rstrip('_')
    return next((kind for kind, names in KINDS if base in names), OTHER)


def profile_pass(model, x, backward: bool, warmup: int = 2):
    """Self time by operator kind (s), operator calls, wall time unprofiled (s), and the events."""
    for _ in range(warmup):
        step(model, x, backward)
        model.zero_grad(set_to_none=True)
    begin = time.perf_counter()
    step(model, x, backward)
    wall = time.perf_counter() - begin
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        begin = time.perf_counter()
        step(model, x, backward)
        profiled_wall = time.perf_counter() - begin
    model.zero_grad(set_to_none=True)
    events = [e for e in prof.key_averages() if e.key.startswith(('aten::', 'mmfocal_cpu::'))]
    by_kind = collections.Counter()
    calls = 0
    for event in events:
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e6
        calls += event.count
    # The profiler slows every call down; scale the operators' times so that they and what lies
    # outside them add up to the unprofiled wall time in the profiled proportions.
    scale = wall / profiled_wall
    by_kind = collections.Counter({k: v * scale for k, v in by_kind.items()})
    by_kind[UNACCOUNTED] = max(0.0, wall - sum(by_kind.values()))
    return by_kind, calls, wall, events


def chunk_sweep(model, x, repeats: int, sizes_mib) -> None:
    """Focal-T's forward and forward+backward with each chunk size, interleaved; prints the median
    times and each size's ratio to the default (the size derived from this machine), round by
    round as backbone_speed.py's ratios."""
    from mmfocal.models.layers import attention_path
    from mmfocal.models.layers.chunking import default_chunk_bytes
    settings = {'default': None, **{f'{m:g} MiB': int(m * 2**20) for m in sizes_mib}}
    print(f'  default chunk: {default_chunk_bytes() / 2**20:g} MiB (from the L2 per core and the threads)')
    for backward in (False, True):
        times = collections.defaultdict(list)
        for _ in range(repeats + 1):  # the first round warms up
            for label, chunk in settings.items():
                with attention_path(chunk_bytes=chunk):
                    begin = time.perf_counter()
                    step(model, x, backward)
                    times[label].append(time.perf_counter() - begin)
                model.zero_grad(set_to_none=True)
        print(f'  {"fwd+bwd" if backward else "fwd":>8}: ' + ', '.join(
            f'{label} {statistics.median(t[1:]) * 1e3:.0f} ms ({ratio_text(paired_ratio(t[1:], times["default"][1:]))})'
            for label, t in times.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '512x512', '224x224'])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--passes', nargs='+', default=['fwd', 'fwd+bwd'], choices=['fwd', 'fwd+bwd'])
    parser.add_argument('--top', type=int, default=0, help='also list the N most expensive operators of Focal-T')
    parser.add_argument('--models', nargs='+', default=['focal', 'swin'], choices=list(LABELS))
    parser.add_argument('--chunk-sweep', nargs='*', type=float, metavar='MIB',
                        help='time Focal-T with these chunk sizes (MiB; default 0.5 1 2 4 8 16) instead')
    parser.add_argument('--repeats', type=int, default=5, help='rounds of the chunk sweep')
    args = parser.parse_args()

    torch.manual_seed(0)
    names = ['focal'] if args.chunk_sweep is not None else args.models
    models = {name: build_backbone(name, 'cpu') for name in names}
    kinds = [ATTENTION] + [k for k, _ in KINDS] + [OTHER, UNACCOUNTED]
    print(f'device: {machine_description("cpu")}; torch {torch.__version__}')
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split('x'))
        x = torch.randn(args.batch, 3, *size)
        if args.chunk_sweep is not None:
            print(f'\n{args.batch}x{size_text}, Focal-T by chunk size:')
            chunk_sweep(models['focal'], x, args.repeats, args.chunk_sweep or [0.5, 1, 2, 4, 8, 16])
            continue
        for pass_name in args.passes:
            results = {name: profile_pass(model, x, pass_name == 'fwd+bwd') for name, model in models.items()}
            print(f'\n{args.batch}x{size_text} {pass_name}: ' + ', '.join(
                f'{LABELS[n]} {r[2] * 1e3:.1f} ms in {r[1]} operator calls' for n, r in results.items()))
            header = f'{"kind":>24} ' + ' '.join(f'{LABELS[n] + " ms":>14}' for n in models)
            first, *rest = list(models)
            if rest:
                header += f' {LABELS[first] + " - " + LABELS[rest[0]]:>20}'
            print(header)
            for kind in kinds:
                values = [results[n][0][kind] * 1e3 for n in models]
                line = f'{kind:>24} ' + ' '.join(f'{v:14.1f}' for v in values)
                if rest:
                    line += f' {values[0] - values[1]:20.1f}'
                print(line)
            if args.top and first in results:
                events = sorted(results[first][3], key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]
                print(f'  {LABELS[first]} most expensive operators (profiled self ms, calls):')
                for event in events:
                    print(f'    {event.key:>52} {event.self_cpu_time_total / 1e3:9.1f} {event.count:6d}')


if __name__ == '__main__':
    main()
