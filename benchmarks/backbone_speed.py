"""Focal-T and Focal-fast-T (mmfocal) against mmdet's SwinTransformer-T, timed in the same process.

    python benchmarks/backbone_speed.py                      # all sizes, batch 1 and 2
    python benchmarks/backbone_speed.py --sizes 800x1344 --batches 1 --repeats 3

All backbones have embed dims 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7 and drop
path 0.2 (Focal-fast-T with its published conv embedding and 128 nearest keys per level). For each
input size and batch: forward without gradients and forward+backward in train mode, interleaved
(Focal, Focal-fast, Swin, Focal, ...) after warm-up, median of ``--repeats`` rounds at the largest size
and more at smaller ones (up to ``--max-repeats``: their rounds are as noisy and much shorter); then
the peak memory of one forward+backward of each, measured in a fresh process (peak RSS growth on
CPU, ``torch.cuda.max_memory_allocated`` on a GPU). On a GPU it times with CUDA events and also
reports fp16 and bf16 autocast. Prints the machine (CPU model, caches, threads), the median times
and the ratios Focal/Swin, Focal-fast/Swin and Focal-fast/Focal, each the median of the rounds'
ratios with their range (lowest-highest: the noise of the run), and beside them the ratios of the
models' FLOPs at that size (mmengine's counter with the attention's matrix products counted, the
same for every model: ``mmfocal.analysis.flops.backbone_flops``), the limit a time ratio can
reach when both run at the same FLOP rate. Targets are in README.md. ``--models`` picks a subset.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from mmfocal.benchmarking.peers import LABELS, build_backbone
from mmfocal.benchmarking.timing import (
    compare_speed,
    flops_per_image,
    machine_description,
    paired_ratio,
    peak_memory_of_step,
    ratio_text,
    rounds_for,
)


def peak_memory(name, size, batch, device) -> float:
    """Peak extra memory (MiB) of one forward+backward, in a fresh process (this script's
    ``--measure-memory``: a process's peak RSS only grows)."""
    command = [sys.executable, os.path.abspath(__file__), '--measure-memory', name, f'{size[0]}x{size[1]}',
               str(batch), device]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == '--measure-memory':
        name, size, batch, device = sys.argv[2:6]
        print(peak_memory_of_step(name, tuple(int(v) for v in size.split('x')), int(batch), device))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '512x512', '224x224'])
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--repeats', type=int, default=5,
                        help='rounds at the largest input size; smaller sizes get more (see rounds_for)')
    parser.add_argument('--max-repeats', type=int, default=25, help='the most rounds any size gets')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--models', nargs='+', default=list(LABELS), choices=list(LABELS))
    args = parser.parse_args()

    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    models = {name: build_backbone(name, device) for name in args.models}
    precisions = [None] + ([torch.float16, torch.bfloat16] if device == 'cuda' else [])
    sizes = [tuple(int(v) for v in size_text.split('x')) for size_text in args.sizes]
    largest = max(h * w for h, w in sizes)
    print(f'device: {machine_description(device)}; torch {torch.__version__}; median of {args.repeats} rounds at '
          f'the largest size, of more at smaller ones (the "rounds" column)')
    ratios = [(a, b) for a, b in (('focal', 'swin'), ('fast', 'swin'), ('fast', 'focal')) if {a, b} <= set(models)]
    print(f'{"input":>14} {"rounds":>6} {"precision":>9} {"pass":>8} '
          + ' '.join(f'{LABELS[n] + " s":>14}' for n in models) + ' '
          + ' '.join(f'{LABELS[a] + "/" + LABELS[b]:>20}' for a, b in ratios))
    rows = []
    for size_text, size in zip(args.sizes, sizes):
        rounds = rounds_for(size, largest, args.repeats, args.max_repeats)
        flops = flops_per_image(models, size)
        rows.append(dict(size=size_text, batch=1, precision='-', pass_='GFLOPs',
                         **{n: f / 1e9 for n, f in flops.items()},
                         **{f'{a}/{b}': flops[a] / flops[b] for a, b in ratios}))
        print(f'{"1x" + size_text:>14} {"":>6} {"-":>9} {"GFLOPs":>8} '
              + ' '.join(f'{flops[n] / 1e9:14.1f}' for n in models) + ' '
              + ' '.join(f'{flops[a] / flops[b]:20.2f}' for a, b in ratios), flush=True)
        for batch in args.batches:
            for dtype in precisions:
                results = compare_speed(models, size, batch, rounds, args.warmup, device, dtype)
                label = {None: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16'}[dtype]
                for pass_name, times in results.items():
                    t = {n: statistics.median(v) for n, v in times.items()}
                    paired = {f'{a}/{b}': paired_ratio(times[a], times[b]) for a, b in ratios}
                    rows.append(dict(size=size_text, batch=batch, rounds=rounds, precision=label, pass_=pass_name, **t,
                                     **{key: r[0] for key, r in paired.items()},
                                     **{f'{key} range': r[1:] for key, r in paired.items()}))
                    print(f'{batch}x{size_text:>10} {rounds:>6} {label:>9} {pass_name:>8} '
                          + ' '.join(f'{t[n]:14.3f}' for n in models) + ' '
                          + ' '.join(f'{ratio_text(r):>20}' for r in paired.values()), flush=True)
            if not args.no_memory:
                mem = {name: peak_memory(name, size, batch, device) for name in models}
                rows.append(dict(size=size_text, batch=batch, precision='fp32', pass_='peak MiB', **mem,
                                 **{f'{a}/{b}': mem[a] / mem[b] for a, b in ratios}))
                print(f'{batch}x{size_text:>10} {"":>6} {"fp32":>9} {"peak MiB":>8} '
                      + ' '.join(f'{mem[n]:14.0f}' for n in models) + ' '
                      + ' '.join(f'{mem[a] / mem[b]:20.2f}' for a, b in ratios), flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
