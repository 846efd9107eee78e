"""ONNX Runtime (CPU) latency of Focal-T's backbone against mmdet's Swin-T and against eager PyTorch,
and torch.compile (Inductor) against eager, batch 1, in one process.

    python benchmarks/onnx_speed.py                       # 800x1344 and 512x512
    python benchmarks/onnx_speed.py --sizes 800x1344 --repeats 3 --onnx-dir work/onnx
    python benchmarks/onnx_speed.py --sizes 512x512 --no-compile --train
    python benchmarks/onnx_speed.py --threads 1       # steadier on a machine shared with other jobs

Each backbone (random weights, eval mode) is exported at each size with a fixed input shape
(TorchScript exporter, opset 17); with ``--onnx-dir`` the files are kept there and an existing
file is reused (an export of Focal-T at 800x1344 takes 10 to 50 s on a small CPU). Focal-T is also
compiled per size (``torch.compile(fullgraph=True, dynamic=False)``, Inductor), forward without
gradients; ``--train`` adds forward+backward in train mode, eager and compiled. The runners are
timed interleaved (Focal ORT, Swin ORT, Focal eager, Focal compiled, ...) after one warm-up,
median of ``--repeats`` rounds. Prints the compile times, seconds per run and the ratios, each
the median of the rounds' ratios with their range (as ``backbone_speed.py``).
"""
import argparse
import functools
import os
import statistics
import tempfile
import time

import onnxruntime
import torch

# The same models, passes, machine line and ratios as backbone_speed.py.
from mmfocal.benchmarking.peers import build_backbone
from mmfocal.benchmarking.timing import machine_description, paired_ratio, ratio_text, step
from mmfocal.deployment.export import export_onnx
from mmfocal.deployment.ort_model import ORTModel

RATIOS = (('Focal/Swin ORT', 'focal ORT', 'swin ORT'), ('Focal ORT/eager', 'focal ORT', 'focal eager'),
          ('compiled/eager', 'focal compiled', 'focal eager'),
          ('compiled/eager train', 'focal compiled train', 'focal eager train'))


class _Backbone(torch.nn.Module):
    """A backbone's output as a tuple (mmdet's Swin returns one already; kept uniform)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return tuple(self.backbone(x))


def onnx_runner(name: str, model: torch.nn.Module, x: torch.Tensor, directory: str, threads: int) -> ORTModel:
    """ONNX Runtime on ``directory/{name}_{H}x{W}.onnx``, exported from ``model`` at ``x`` unless it exists."""
    path = os.path.join(directory, f'{name}_{x.shape[2]}x{x.shape[3]}.onnx')
    if os.path.isfile(path):
        print(f'{name}: reusing {path}', flush=True)
    else:
        start = time.perf_counter()
        export_onnx(model.eval(), x, path, part='backbone')  # a training runner may have left train mode
        print(f'{name}: exported in {time.perf_counter() - start:.0f} s', flush=True)
    return ORTModel(path, num_threads=threads)


def passes(model: torch.nn.Module, backward: bool):
    """``mmfocal.benchmarking.timing.step`` on ``model``: eval mode without gradients, or train mode forward
    and backward (setting the mode each run, so one model serves both)."""
    return functools.partial(step, model, backward=backward)


def compiled_runner(label: str, model: torch.nn.Module, backward: bool, x: torch.Tensor):
    """:func:`passes` of ``model`` compiled for ``x``'s size (static shapes), warmed up once here."""
    run = passes(torch.compile(model, fullgraph=True, dynamic=False), backward)
    start = time.perf_counter()
    run(x)
    print(f'{label}: compiled in {time.perf_counter() - start:.0f} s', flush=True)
    return run


def time_interleaved(runners: dict, x: torch.Tensor, repeats: int) -> dict:
    """Seconds per runner, one per round over ``repeats`` rounds, each round running every runner
    once (so load changes hit every runner alike), after one warm-up round."""
    for fn in runners.values():
        fn(x)
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    return times


def print_row(size: str, times: dict) -> None:
    """One table per size, printed as soon as it is measured (a run at 800x1344 takes long): the
    median times and the ratios as backbone_speed.py prints them (median of the rounds' ratios and
    their range)."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = [(label, paired_ratio(times[a], times[b])) for label, a, b in RATIOS if a in times and b in times]
    print(f'{"input":>10} ' + ' '.join(f'{name:>21}' for name in medians) + ''.join(f' {r:>20}' for r, _ in ratios))
    print(f'{size:>10} ' + ' '.join(f'{t:>20.3f}s' for t in medians.values()) +
          ''.join(f' {ratio_text(v):>20}' for _, v in ratios), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '512x512'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--onnx-dir', help='keep the exported files here and reuse existing ones')
    parser.add_argument('--no-eager', action='store_true', help='skip eager PyTorch (and so the compile ratios)')
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile (minutes to compile)')
    parser.add_argument('--train', action='store_true', help='also forward+backward, eager and compiled')
    parser.add_argument('--threads', type=int, help='threads of PyTorch and ONNX Runtime (default: PyTorch\'s)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f'device: {machine_description("cpu")}')
    print(f'torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}; both with {threads} threads')
    models = {name: _Backbone(build_backbone(name, 'cpu')).eval() for name in ('focal', 'swin')}
    focal = models['focal']
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.onnx_dir or tmp
        os.makedirs(directory, exist_ok=True)
        for size in args.sizes:
            height, width = map(int, size.split('x'))
            x = torch.randn(1, 3, height, width)
            runners = {f'{name} ORT': onnx_runner(name, model, x, directory, threads) for name, model in models.items()}
            if not args.no_eager:
                runners['focal eager'] = passes(focal, backward=False)
            if not args.no_compile:
                runners['focal compiled'] = compiled_runner('focal (inference)', focal, False, x)
            if args.train:
                if not args.no_eager:
                    runners['focal eager train'] = passes(focal, backward=True)
                if not args.no_compile:
                    runners['focal compiled train'] = compiled_runner('focal (training)', focal, True, x)
            print_row(size, time_interleaved(runners, x, args.repeats))

if __name__ == '__main__':
    main()
