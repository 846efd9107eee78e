"""ONNX Runtime (CPU) latency of Focal-T's backbone against mmdet's Swin-T and against eager PyTorch,
and torch.compile against eager, batch 1, in one process.

    python benchmarks/onnx_speed.py                       # 800x1344 and 512x512
    python benchmarks/onnx_speed.py --sizes 512x512 --repeats 3 --no-compile

Each backbone (random weights, eval mode) is exported at each size with a fixed input shape
(TorchScript exporter, opset 17), then timed interleaved (Focal ORT, Swin ORT, Focal eager,
Focal compiled) after one warm-up, median of ``--repeats`` runs. Prints seconds and the ratios.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backbone_speed import build  # noqa: E402  (the same Focal-T and Swin-T settings)

from mmfocal.deployment.export import export_onnx  # noqa: E402
from mmfocal.deployment.ort_model import ORTModel  # noqa: E402


class _Backbone(torch.nn.Module):
    """A backbone's output as a tuple (mmdet's Swin returns one already; kept uniform)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return tuple(self.backbone(x))


def median_time(fn, x, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '512x512'])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile (minutes to compile)')
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f'torch {torch.__version__}, {threads} threads; ONNX Runtime with {threads} intra-op threads')
    models = {name: _Backbone(build(name, 'cpu')).eval() for name in ('focal', 'swin')}
    compiled = None if args.no_compile else torch.compile(models['focal'], fullgraph=True)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for size in args.sizes:
            height, width = map(int, size.split('x'))
            x = torch.randn(1, 3, height, width)
            runners = {}
            for name, model in models.items():
                path = os.path.join(tmp, f'{name}_{size}.onnx')
                start = time.perf_counter()
                export_onnx(model, x, path, part='backbone')
                print(f'{name} exported at {size} in {time.perf_counter() - start:.0f} s', flush=True)
                runners[f'{name} ORT'] = ORTModel(path, num_threads=threads)
            runners['focal eager'] = models['focal']
            if compiled is not None:
                start = time.perf_counter()
                compiled(x)
                print(f'focal compiled at {size} in {time.perf_counter() - start:.0f} s')
                runners['focal compiled'] = compiled
            for fn in runners.values():  # warm-up
                fn(x)
            times = {name: [] for name in runners}
            for _ in range(args.repeats):  # interleaved, so load changes hit every runner alike
                for name, fn in runners.items():
                    times[name].append(median_time(fn, x, 1))
            medians = {name: statistics.median(t) for name, t in times.items()}
            print_row(size, medians)


def print_row(size, medians):
    """One line per size, printed as soon as it is measured (a run at 800x1344 takes long)."""
    print(f'{"input":>10} ' + ' '.join(f'{name:>15}' for name in medians) +
          '  Focal/Swin ORT  Focal ORT/eager  compiled/eager')
    line = f'{size:>10} ' + ' '.join(f'{t:>14.3f}s' for t in medians.values())
    line += f'  {medians["focal ORT"] / medians["swin ORT"]:>14.2f}'
    line += f'  {medians["focal ORT"] / medians["focal eager"]:>15.2f}'
    if 'focal compiled' in medians:
        line += f'  {medians["focal compiled"] / medians["focal eager"]:>14.2f}'
    print(line, flush=True)


if __name__ == '__main__':
    main()
