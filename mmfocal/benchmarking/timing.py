"""Timing and memory of a backbone's passes, and the ratios of two backbones' times.

Two backbones are compared round by round: each round runs both back to back, so a machine that
speeds up or slows down between rounds moves both times of a round alike, and the ratio of a
comparison is the median of the rounds' ratios, with their range (:func:`paired_ratio`).
"""
import functools
import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .peers import build_backbone

__all__ = ['step', 'timed', 'paired_ratio', 'ratio_text', 'rounds_for', 'compare_speed', 'machine_description',
           'flops_per_image', 'peak_memory_of_step']


def step(model: torch.nn.Module, x: torch.Tensor, backward: bool,
         autocast_dtype: Optional[torch.dtype] = None) -> None:
    """One pass of ``model`` on ``x``.

    Args:
        model (torch.nn.Module): A backbone returning a sequence of feature maps.
        x (torch.Tensor): The input, shape (N, 3, H, W).
        backward (bool): Forward and backward in train mode (the loss: the sum of the outputs'
            means) if True, else forward without gradients in eval mode.
        autocast_dtype (torch.dtype, optional): Run under autocast to this dtype; None runs with
            autocast off. Defaults to None.
    """
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


def timed(model: torch.nn.Module, x: torch.Tensor, backward: bool,
          autocast_dtype: Optional[torch.dtype] = None) -> float:
    """Seconds of one :func:`step`: CUDA events on a GPU, else wall time.

    Args:
        model (torch.nn.Module): The backbone.
        x (torch.Tensor): The input, shape (N, 3, H, W).
        backward (bool): Forward and backward in train mode if True, else forward without
            gradients in eval mode.
        autocast_dtype (torch.dtype, optional): Run under autocast to this dtype; None runs with
            autocast off. Defaults to None.

    Returns:
        float: The step's seconds.
    """
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


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Tuple[float, float, float]:
    """The ratios of two runners' times, round by round.

    Args:
        numerator (Sequence[float]): One runner's seconds, one per round.
        denominator (Sequence[float]): The other's, of the same rounds.

    Returns:
        tuple[float, float, float]: The median, lowest and highest ratio. The median of the
        rounds' ratios drifts less than the ratio of the two medians on a machine whose speed
        changes between rounds (a shared VM's does; docs/speed.md); the range shows the noise
        left.
    """
    ratios = sorted(a / b for a, b in zip(numerator, denominator))
    return statistics.median(ratios), ratios[0], ratios[-1]


def ratio_text(ratio: Tuple[float, float, float]) -> str:
    """A :func:`paired_ratio` as ``'median (lowest-highest)'``, two decimals each."""
    return f'{ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f})'


def rounds_for(size: Sequence[int], largest_pixels: int, repeats: int, max_repeats: int) -> int:
    """The rounds to time an input of ``size`` for.

    A small input's rounds are as noisy as a large one's and much shorter, so small sizes get
    more rounds, for medians as steady in about the same time.

    Args:
        size (Sequence[int]): The input's (H, W).
        largest_pixels (int): H * W of the largest input of the run.
        repeats (int): The rounds at the largest input.
        max_repeats (int): The most rounds any input gets.

    Returns:
        int: ``repeats`` times ``largest_pixels / (H * W)``, rounded, between ``repeats`` and
        ``max_repeats``.
    """
    return max(repeats, min(max_repeats, round(repeats * largest_pixels / (size[0] * size[1]))))


def compare_speed(models: Dict[str, torch.nn.Module], size: Sequence[int], batch: int, repeats: int, warmup: int,
                  device: str, autocast_dtype: Optional[torch.dtype] = None) -> Dict[str, Dict[str, List[float]]]:
    """Forward and forward+backward times of several models, interleaved.

    Args:
        models (dict[str, torch.nn.Module]): The models by name, on ``device``.
        size (Sequence[int]): The input's (H, W).
        batch (int): The input's batch size.
        repeats (int): Timed rounds; in each, every model runs once, in turn.
        warmup (int): Untimed passes of each model before the rounds.
        device (str): Where the input is made.
        autocast_dtype (torch.dtype, optional): As :func:`step`. Defaults to None.

    Returns:
        dict[str, dict[str, list[float]]]: For ``'fwd'`` and ``'fwd+bwd'``, each model's seconds,
        one per round.
    """
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


def machine_description(device: str) -> str:
    """What the figures of a run depend on, in one line.

    Args:
        device (str): ``'cuda'``, or any other for the CPU.

    Returns:
        str: The GPU's name; or the CPU model with its caches (from ``lscpu``), the cores, the
        threads used, the vector instructions PyTorch's kernels use (the attention's elementwise
        passes and small products scale with them, the large matrix products less) and the chunk
        of windows the CPU attention kernels derive from them.
    """
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
    from ..models.layers.chunking import default_chunk_bytes
    vectors = torch.backends.cpu.get_cpu_capability()
    return f'CPU {model}' + (f' ({", ".join(caches)})' if caches else '') + \
        f', {os.cpu_count()} cores, {torch.get_num_threads()} threads, {vectors} kernels; attention chunks of ' \
        f'{default_chunk_bytes() / 2**20:g} MiB'


def flops_per_image(names: Sequence[str], size: Sequence[int]) -> Dict[str, int]:
    """Each backbone's FLOPs for one image.

    Args:
        names (Sequence[str]): Backbones by :func:`~mmfocal.benchmarking.peers.build_backbone`'s names.
        size (Sequence[int]): The image's (H, W).

    Returns:
        dict[str, int]: FLOPs by name (:func:`mmfocal.analysis.flops.backbone_flops`: a multiply-add
        is one FLOP, the attention's products counted), each counted on a model without drop
        path in eval mode (the same products as in training).
    """
    from ..analysis.flops import backbone_flops
    counts = {}
    for name in names:
        model = build_backbone(name, 'cpu', drop_path_rate=0.)
        model.eval()  # not chained: mmdet's SwinTransformer.train() returns None
        counts[name] = backbone_flops(model, size)
    return counts


def peak_memory_of_step(name: str, size: Sequence[int], batch: int, device: str) -> float:
    """The peak memory one forward+backward of a fresh backbone adds.

    Meant for a process of its own (``benchmarks/backbone_speed.py`` starts one per
    measurement): on the CPU the figure is the growth of the process's peak resident memory.

    Args:
        name (str): The backbone, as :func:`~mmfocal.benchmarking.peers.build_backbone` takes it.
        size (Sequence[int]): The input's (H, W).
        batch (int): The input's batch size.
        device (str): ``'cuda'`` (``torch.cuda.max_memory_allocated``) or ``'cpu'`` (peak RSS).

    Returns:
        float: MiB beyond what was allocated before the pass.
    """
    model = build_backbone(name, device)
    x = torch.randn(batch, 3, *size, device=device)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, backward=True)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:  # Linux: reset the high-water mark to the current RSS, so the peak is this step's alone
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        base = _status_kib('VmRSS')
        peak_kib = functools.partial(_status_kib, 'VmHWM')
    except OSError:
        peak_kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
        base = peak_kib()
    step(model, x, backward=True)
    return (peak_kib() - base) / 1024


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))

