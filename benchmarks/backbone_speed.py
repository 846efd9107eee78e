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
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

SWIN_T = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
              drop_path_rate=0.2, out_indices=(0, 1, 2, 3))


LABELS = {'focal': 'Focal-T', 'fast': 'Focal-fast-T', 'swin': 'Swin-T'}


def build(name: str, device: str, drop_path_rate: float = 0.2) -> torch.nn.Module:
    if name == 'focal':
        from mmfocal import FocalTransformer
        model = FocalTransformer(arch='tiny', drop_path_rate=drop_path_rate)
    elif name == 'fast':
        from mmfocal import FocalFastTransformer
        model = FocalFastTransformer(arch='tiny', drop_path_rate=drop_path_rate)
    else:
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(**dict(SWIN_T, drop_path_rate=drop_path_rate))
    return model.to(device)


def machine_description(device: str) -> str:
    """What the figures depend on: the GPU, or the CPU model with its caches (from ``lscpu``), the
    threads used, the vector instructions PyTorch's kernels use and the size of the chunks of
    windows the attention kernels derive from them."""
    if device == 'cuda':
        return torch.cuda.get_device_name()
    model, caches = platform.processor() or platform.machine(), []
    try:
        lines = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout.splitlines()
        fields = dict(line.split(':', 1) for line in lines if ':' in line)
        model = fields.get('Model name', model).strip()
        caches = [f'{name} {fields[name].strip()}' for name in ('L1d cache', 'L2 cache', 'L3 cache') if name in fields]
    except (OSError, subprocess.CalledProcessError):
        pass
    from mmfocal.models.layers.chunking import default_chunk_bytes
    # The widest vector instructions PyTorch's kernels use here (AVX2, AVX512, ...): the attention's
    # elementwise passes and small products scale with it, the large matrix products less.
    vectors = torch.backends.cpu.get_cpu_capability()
    return f'CPU {model}' + (f' ({", ".join(caches)})' if caches else '') + \
        f', {os.cpu_count()} cores, {torch.get_num_threads()} threads, {vectors} kernels; attention chunks of ' \
        f'{default_chunk_bytes() / 2**20:g} MiB'


def flops_per_image(names, size) -> dict:
    """Each model's FLOPs for one image of ``size`` (H, W), counted on a copy without drop path
    in eval mode (the same products as in training)."""
    from mmfocal.analysis.flops import backbone_flops
    counts = {}
    for name in names:
        model = build(name, 'cpu', drop_path_rate=0.)
        model.eval()  # not chained: mmdet's SwinTransformer.train() returns None
        counts[name] = backbone_flops(model, size)
    return counts


def step(model, x, backward: bool, autocast_dtype=None):
    context = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype
               else torch.autocast(x.device.type, enabled=False))
    if backward:
        model.train()
        with context:
            outs = model(x)
            loss = sum(o.float().mean() for o in outs)
        loss.backward()
    else:
        model.eval()
        with torch.no_grad(), context:
            model(x)


def timed(model, x, backward, autocast_dtype=None) -> float:
    if x.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(model, x, backward, autocast_dtype)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    step(model, x, backward, autocast_dtype)
    return time.perf_counter() - begin


def paired_ratio(numerator: list, denominator: list) -> tuple:
    """Median, lowest and highest of the ratios of two runners' times round by round. Each round
    runs both back to back, so a machine that speeds up or slows down between rounds (a shared VM
    does, by 20% and more) moves both times of a round alike: the median of the rounds' ratios
    drifts less than the ratio of the two medians, and the range shows what noise is left."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator))
    return statistics.median(ratios), ratios[0], ratios[-1]


def ratio_text(ratio: tuple) -> str:
    """A :func:`paired_ratio` as 'median (lowest-highest)'."""
    return f'{ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f})'


def rounds_for(size, largest_pixels: int, repeats: int, max_repeats: int) -> int:
    """Rounds for an input of ``size``: ``repeats`` at the largest size of the run, more in
    proportion to fewer pixels, at most ``max_repeats``. A round at 224x224 takes a twentieth of
    one at 800x1344 while its noise is as large (single rounds there ranged 0.57-1.49 in a run of
    5), so small sizes get the rounds that make their medians as steady in about the same time."""
    return max(repeats, min(max_repeats, round(repeats * largest_pixels / (size[0] * size[1]))))


def compare_speed(models, size, batch, repeats, warmup, device, autocast_dtype=None):
    """Seconds of each model's forward and forward+backward, one list per pass and model, a time
    per round (the models run in turn within a round)."""
    x = torch.randn(batch, 3, *size, device=device)
    results = {}
    for backward in (False, True):
        for model in models.values():
            for _ in range(warmup):
                step(model, x, backward, autocast_dtype)
        times = {name: [] for name in models}
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(timed(model, x, backward, autocast_dtype))
                model.zero_grad(set_to_none=True)
        results['fwd+bwd' if backward else 'fwd'] = times
    return results


def peak_memory(name, size, batch, device) -> float:
    """Peak extra memory (MiB) of one forward+backward, in a fresh process."""
    command = [sys.executable, os.path.abspath(__file__), '--measure-memory', name, f'{size[0]}x{size[1]}',
               str(batch), device]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def measure_memory_here(name, size, batch, device):
    model = build(name, device)
    x = torch.randn(batch, 3, *size, device=device)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, backward=True)
        torch.cuda.synchronize()
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    try:  # Linux: reset the high-water mark to the current RSS, so the peak is this step's alone
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        base = _status_kib('VmRSS')
        peak_kib = functools.partial(_status_kib, 'VmHWM')
    except OSError:
        peak_kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
        base = peak_kib()
    step(model, x, backward=True)
    print((peak_kib() - base) / 1024)


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == '--measure-memory':
        name, size, batch, device = sys.argv[2:6]
        measure_memory_here(name, tuple(int(v) for v in size.split('x')), int(batch), device)
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

    import mmfocal  # noqa: F401
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    models = {name: build(name, device) for name in args.models}
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
