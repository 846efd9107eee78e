"""The GPU check's sections: everything a CUDA machine has to say about mmfocal, as markdown.

``benchmarks/gpu_check.py`` runs them (its help lists what each measures; docs/gpu.md how to run
it); :func:`run_sections` runs any of them with a :class:`Settings`. Each section returns its
markdown lines or raises :class:`SectionSkipped`; without CUDA the GPU sections skip, and with
``Settings(device='cpu')`` their machinery runs on the CPU.
"""
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
import traceback
from typing import List, Optional, Sequence

import torch

from .detection import (
    FOCAL_DET_CONFIG,
    TORCHVISION_ROI_ALIGN,
    build_detector,
    mmcv_ops_status,
    swin_det_config_path,
    synthetic_det_batch,
    time_iteration,
    training_iteration,
)
from .parity import (
    GRADIENT_TOLERANCE,
    MODELS,
    OUTPUT_TOLERANCE,
    TINY_BACKBONE,
    build_parity_backbone,
    check_parity,
    other_devices_path,
    tf32_disabled,
)
from .peers import SWIN_T, build_backbone
from .timing import compare_speed, paired_ratio, step

__all__ = ['DEVICE_TESTS', 'DEVICE_TEST_SELECTION', 'SECTIONS', 'SectionSkipped', 'Settings', 'run_sections',
           'write_report']

DEVICE_TESTS = ['tests/test_backbone.py', 'tests/test_focal_fast.py']
DEVICE_TEST_SELECTION = 'straightforward or bfloat16 or kernel'


class SectionSkipped(Exception):
    """A section that cannot run here, with the reason."""


class Settings:
    """What one run of the GPU check measures, and where.

    Args:
        quick (bool): Tiny model and inputs, few repeats (the CPU test of the check) if True,
            else the full sizes.
        device (str): Where the GPU sections run: ``'cuda'``, or ``'cpu'`` to run their machinery
            here (the attention then takes the code path of other devices).
        repository (str, optional): The checkout whose device tests the ``tests`` section runs;
            None skips that section. Defaults to None.
    """

    def __init__(self, quick: bool, device: str, repository: Optional[str] = None):
        self.quick, self.device, self.repository = quick, torch.device(device), repository
        self.parity_cases = [((35, 42), 2)] if quick else [((800, 1344), 1), ((512, 512), 2)]
        self.speed_sizes = [(64, 96)] if quick else [(800, 1344), (512, 512)]
        self.speed_batch = 2
        self.repeats, self.warmup = (2, 1) if quick else (10, 2)
        self.det_image_size = (64, 96) if quick else (800, 1333)
        self.det_iterations, self.det_warmup = (2, 1) if quick else (10, 2)
        self.backbone_settings = TINY_BACKBONE if quick else {}
        # Mask R-CNN under autocast: fp16 is what tools/train.py --amp trains with. On the CPU only
        # float32: mmcv's CPU NMS and RoIAlign take no bf16 (the run checks the machinery there).
        on_cpu = self.device.type == 'cpu'
        # mmcv's RoIAlign has no bf16 kernel (CPU or CUDA); torchvision's casts to float32 under
        # autocast, so bf16 also runs with it (mmcv's RoIAlign(use_torchvision=True)).
        self.amp_dtypes = ([None, (None, TORCHVISION_ROI_ALIGN)] if on_cpu else
                           [torch.float16, torch.bfloat16, (torch.bfloat16, TORCHVISION_ROI_ALIGN)])
        self.iteration_dtypes = [None] if on_cpu else [None, torch.float16, torch.bfloat16]


def require_cuda(settings: Settings) -> None:
    """Raise :class:`SectionSkipped` where CUDA is asked for and there is none."""
    if settings.device.type == 'cuda' and not torch.cuda.is_available():
        raise SectionSkipped('no CUDA device')


def require_mmcv_cuda_ops(device: torch.device) -> None:
    """Raise :class:`SectionSkipped` where mmcv's ops have no CUDA kernels for a CUDA ``device``."""
    if device.type == 'cuda' and not mmcv_ops_status().startswith('cuda'):
        raise SectionSkipped(f'Mask R-CNN needs mmcv ops (RoIAlign, NMS) with CUDA kernels: {mmcv_ops_status()}')


def section_environment(settings: Settings, budget: float) -> list:
    """GPU, torch, CUDA, cuDNN, the OpenMMLab packages, whether mmcv's ops have CUDA kernels.

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.
    """
    on_gpu = settings.device.type == 'cuda' and torch.cuda.is_available()
    lines = [f'- device: {settings.device}' + (f' ({torch.cuda.get_device_name()}, '
                                               f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)'
                                               if on_gpu else '')]
    lines.append(f'- CUDA available: {torch.cuda.is_available()}')
    lines.append(f'- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, '
                 f'Python {platform.python_version()}, {os.cpu_count()} CPUs')
    for package in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
        try:
            module = __import__(package)
            lines.append(f'- {package} {module.__version__}')
        except Exception as error:  # noqa: BLE001
            lines.append(f'- {package}: not importable ({type(error).__name__}: {error})')
    lines.append(f'- mmcv ops: {mmcv_ops_status()}')
    lines.append(f'- TF32: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32} '
                 '(parity runs with both off)')
    return lines


def section_tests(settings: Settings, budget: float) -> list:
    """The test suite's device tests (:data:`DEVICE_TESTS`) with ``MMFOCAL_TEST_DEVICE`` set.

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.

    Raises:
        SectionSkipped: CUDA is asked for and there is none, or the package does not run
            from a checkout of the repository.
    """
    require_cuda(settings)
    root = settings.repository
    if root is None:
        raise SectionSkipped('the device tests run from a checkout of the repository (benchmarks/gpu_check.py)')
    python_path = os.pathsep.join([root] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    env = dict(os.environ, MMFOCAL_TEST_DEVICE=str(settings.device), PYTHONPATH=python_path)
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *DEVICE_TESTS, '-k',
               DEVICE_TEST_SELECTION]
    try:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b'').decode() if isinstance(expired.stdout, bytes) else (expired.stdout or '')
        return [f'- stopped after the section budget of {budget:.0f} s', '```', out[-1500:], '```']
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else '(no output)'
    failed = [line for line in lines if line.startswith(('FAILED', 'ERROR'))]
    out = [f'- `MMFOCAL_TEST_DEVICE={settings.device} pytest {" ".join(DEVICE_TESTS)} -k "{DEVICE_TEST_SELECTION}"`',
           f'- result: **{summary}** (exit code {result.returncode})']
    out += [f'  - {line}' for line in failed[:20]]
    if result.returncode not in (0, 5) and not failed:
        out += ['```', (result.stdout + result.stderr)[-1500:], '```']
    return out


def section_parity(settings: Settings, budget: float) -> list:
    """Every attention path on the device against the CPU float32 path, TF32 off (:mod:`.parity`).

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.

    Raises:
        SectionSkipped: CUDA is asked for and there is none.
    """
    require_cuda(settings)
    start = time.perf_counter()
    lines = [f'Tested device against the CPU float32 path; tolerances: outputs {OUTPUT_TOLERANCE:g}, gradients '
             f'{GRADIENT_TOLERANCE:g} (relative to each tensor\'s largest value).', '',
             '| model | input | path | output error | gradient error | worst gradient | ok |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    tested_context = other_devices_path if settings.device.type == 'cpu' else None
    with tf32_disabled():
        for name, label in MODELS.items():
            for size, batch in settings.parity_cases:
                if time.perf_counter() - start > budget:
                    lines.append(f'| {label} | {batch}x3x{size[0]}x{size[1]} | stopped: section budget spent | | | | |')
                    continue
                for row in check_parity(name, size, batch, settings.device, settings.backbone_settings,
                                        tested_context):
                    grad = '' if row['gradient_error'] is None else f'{row["gradient_error"]:.2e}'
                    lines.append(f'| {label} | {batch}x3x{size[0]}x{size[1]} | {row["path"]} | '
                                 f'{row["output_error"]:.2e} | {grad} | {row["worst"]} | '
                                 f'{"yes" if row["passed"] else "**NO**"} |')
    return lines


def section_amp(settings: Settings, budget: float) -> list:
    """Mask R-CNN Focal-T training steps under fp16 (with a GradScaler) and bf16 autocast.

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.

    Raises:
        SectionSkipped: CUDA is asked for and there is none, or mmcv's ops have no CUDA
            kernels.
    """
    require_cuda(settings)
    require_mmcv_cuda_ops(settings.device)
    start = time.perf_counter()
    lines = ['Mask R-CNN Focal-T (configs/det/mask_rcnn_focal_t_1x.py, no checkpoint), batch of 2 '
             f'{settings.det_image_size[0]}x{settings.det_image_size[1]} synthetic images, AdamW lr 1e-4, 3 steps. '
             'With fp16 a first step may overflow at the initial loss scale (the scaler then skips it and lowers '
             'the scale, as in training); the last step must be finite.', '',
             '| precision | losses | gradients finite | loss scale | ok |', '| --- | --- | --- | --- | --- |']
    return lines + _rows_by_precision(_amp_row, settings.amp_dtypes, settings, columns=5, deadline=start + budget)


def _amp_row(precision, settings: Settings, batch) -> str:
    dtype, variant = precision if isinstance(precision, tuple) else (precision, None)
    model = build_detector(FOCAL_DET_CONFIG, settings.device, settings.quick,
                           torchvision_roi_align=variant == TORCHVISION_ROI_ALIGN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(settings.device.type) if dtype == torch.float16 else None
    losses, finite = [], []
    for _ in range(3):
        loss, ok = training_iteration(model, batch, optimizer, dtype, scaler)
        losses.append(loss)
        finite.append(ok)
    scale = f'{scaler.get_scale():g}' if scaler else '-'
    passed = all(map(math.isfinite, losses)) and finite[-1]
    return (f'| {_precision_label(precision)} | {", ".join(f"{v:.4f}" for v in losses)} | '
            f'{", ".join(map(str, finite))} | {scale} | {"yes" if passed else "**NO**"} |')


def _rows_by_precision(make_row, dtypes, settings: Settings, columns: int, deadline: float) -> list:
    """One table row per autocast dtype, ``make_row(dtype, settings, batch)`` on the synthetic
    detection batch, until ``deadline``; a row that fails says how (the other precisions still run)."""
    batch = synthetic_det_batch(settings.det_image_size)
    rows = []
    for dtype in dtypes:
        label = _precision_label(dtype)
        if time.perf_counter() > deadline:
            rows.append(f'| {label} | stopped: section budget spent |' + ' |' * (columns - 2))
            continue
        try:
            rows.append(make_row(dtype, settings, batch))
        except Exception as error:  # noqa: BLE001
            message = f'{type(error).__name__}: {error}'.replace('|', '/').replace('\n', ' ')[:300]
            print(traceback.format_exc(), file=sys.stderr)
            rows.append(f'| {label} | **failed**: {message} |' + ' |' * (columns - 2))
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def _precision_label(precision) -> str:
    """'fp32', 'fp16 autocast', ... for a dtype (None: no autocast) or a (dtype, variant) pair."""
    if isinstance(precision, tuple):
        return f'{_precision_label(precision[0])}, {precision[1]}'
    return {None: 'fp32', torch.float16: 'fp16 autocast', torch.bfloat16: 'bf16 autocast'}[precision]


def peak_memory_mib(model, x, backward: bool, dtype) -> float:
    """Peak memory one pass of ``model`` allocates beyond what was allocated before it.

    Args:
        model (torch.nn.Module): The backbone.
        x (torch.Tensor): The input, shape (N, 3, H, W).
        backward (bool): Forward and backward in train mode if True, else forward only (as
            :func:`~mmfocal.benchmarking.timing.step`).
        dtype (torch.dtype, optional): Autocast dtype; None: no autocast.

    Returns:
        float: The peak in MiB; NaN on the CPU, which has no allocator statistics.
    """
    model.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, backward, dtype)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # the CPU has no allocator statistics: the run's machinery only
        step(model, x, backward, dtype)
        peak = float('nan')
    model.zero_grad(set_to_none=True)
    return peak


def section_speed(settings: Settings, budget: float) -> list:
    """Focal-T and Focal-fast-T against Swin-T: forward and forward+backward times, peak memory.

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.

    Raises:
        SectionSkipped: CUDA is asked for and there is none.
    """
    require_cuda(settings)
    start = time.perf_counter()
    names = ['focal', 'fast', 'swin']
    if settings.quick:  # the tiny sizes, Swin's too
        from mmdet.models.backbones import SwinTransformer
        models = {name: build_parity_backbone(name, settings.backbone_settings).to(settings.device)
                  for name in names[:2]}
        models['swin'] = SwinTransformer(**dict(SWIN_T, **TINY_BACKBONE)).to(settings.device)
    else:
        models = {name: build_backbone(name, str(settings.device)) for name in names}
    labels = {**MODELS, 'swin': 'Swin-T'}
    lines = [f'Backbones as benchmarks/backbone_speed.py builds them (drop path 0.2, train mode for forward+backward); '
             f'time: median of {settings.repeats} after {settings.warmup} warm-up, CUDA events (time ratios: '
             'median of the rounds\' ratios); memory: peak '
             'allocated beyond the model, one pass.', '',
             '| input | precision | pass | ' + ' | '.join(f'{labels[n]} ms' for n in names) + ' | '
             + ' | '.join(f'{labels[n]} MiB' for n in names) + ' | Focal-T/Swin time | Focal-fast-T/Swin time | '
             'Focal-T/Swin memory | Focal-fast-T/Swin memory |',
             '| --- ' * (3 + 2 * len(names) + 4) + '|']
    precisions = [None, torch.bfloat16] if settings.device.type == 'cpu' else [None, torch.bfloat16, torch.float16]
    plan = [(size, dtype) for dtype in precisions for size in settings.speed_sizes]
    for size, dtype in plan:
        if time.perf_counter() - start > budget:
            lines.append(f'| {settings.speed_batch}x3x{size[0]}x{size[1]} | {_precision_label(dtype)} | '
                         'stopped: section budget spent |' + ' |' * (2 * len(names) + 4))
            continue
        times = compare_speed(models, size, settings.speed_batch, settings.repeats, settings.warmup,
                                             str(settings.device), dtype)
        x = torch.randn(settings.speed_batch, 3, *size, device=settings.device)
        for pass_name, backward in (('fwd', False), ('fwd+bwd', True)):
            rounds = times[pass_name]  # seconds per round, per model
            t = {n: statistics.median(v) for n, v in rounds.items()}
            mem = {n: peak_memory_mib(m, x, backward, dtype) for n, m in models.items()}
            lines.append(f'| {settings.speed_batch}x3x{size[0]}x{size[1]} | {_precision_label(dtype)} | {pass_name} | '
                         + ' | '.join(f'{t[n] * 1000:.1f}' for n in names) + ' | '
                         + ' | '.join(f'{mem[n]:.0f}' for n in names) + ' | '
                         + ' | '.join(f'{paired_ratio(rounds[a], rounds["swin"])[0]:.2f}'
                                      for a in ('focal', 'fast')) + ' | '
                         + ' | '.join(f'{mem[a] / mem["swin"]:.2f}' for a in ('focal', 'fast')) + ' |')
    return lines


def section_mask_rcnn(settings: Settings, budget: float) -> list:
    """One Mask R-CNN training iteration, Focal-T against mmdet's Swin-T config, per precision.

    Args:
        settings (Settings): What to measure, and where.
        budget (float): Seconds this section may take.

    Returns:
        list[str]: The section's Markdown lines.

    Raises:
        SectionSkipped: CUDA is asked for and there is none, or mmcv's ops have no CUDA
            kernels.
    """
    require_cuda(settings)
    require_mmcv_cuda_ops(settings.device)
    start = time.perf_counter()
    lines = [f'One training iteration (data preprocessing on the device, forward with losses, backward, AdamW step), '
             f'batch of 2 synthetic {settings.det_image_size[0]}x{settings.det_image_size[1]} images; median of '
             f'{settings.det_iterations} after {settings.det_warmup} warm-up; peak memory allocated beyond the model '
             'and optimizer.', '',
             '| precision | Focal-T s | Swin-T s | Focal-T/Swin-T | Focal-T MiB | Swin-T MiB | memory ratio |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    return lines + _rows_by_precision(_iteration_row, settings.iteration_dtypes, settings, columns=7,
                                      deadline=start + budget)


def _iteration_row(dtype, settings: Settings, batch) -> str:
    configs = {'focal': FOCAL_DET_CONFIG, 'swin': swin_det_config_path()}
    seconds, peaks = {}, {}
    for name, config in configs.items():
        model = build_detector(config, settings.device, settings.quick)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        # fp16 with loss scaling, as tools/train.py --amp trains
        scaler = torch.amp.GradScaler(settings.device.type) if dtype == torch.float16 else None
        for _ in range(settings.det_warmup):
            training_iteration(model, batch, optimizer, dtype, scaler)
        seconds[name] = statistics.median(time_iteration(model, batch, optimizer, dtype, scaler)
                                          for _ in range(settings.det_iterations))
        if settings.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            training_iteration(model, batch, optimizer, dtype, scaler)
            torch.cuda.synchronize()
            peaks[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peaks[name] = float('nan')
        del model, optimizer
    return (f'| {_precision_label(dtype)} | {seconds["focal"]:.3f} | {seconds["swin"]:.3f} | '
            f'{seconds["focal"] / seconds["swin"]:.2f} | {peaks["focal"]:.0f} | {peaks["swin"]:.0f} | '
            f'{peaks["focal"] / peaks["swin"]:.2f} |')


SECTIONS = {  # name: (title, function, budget in seconds on a GPU)
    'environment': ('Environment', section_environment, 30),
    'tests': ('Device tests', section_tests, 90),
    'parity': ('Parity of the attention paths with the CPU float32 path', section_parity, 90),
    'amp': ('Mask R-CNN Focal-T training steps under AMP', section_amp, 45),
    'speed': ('Speed and memory against Swin-T (backbones)', section_speed, 150),
    'mask_rcnn': ('Mask R-CNN training iteration: Focal-T against Swin-T', section_mask_rcnn, 75),
}


def run_sections(settings: Settings, names: Sequence[str], report: List[str], out_path: Optional[str] = None,
                 time_limit: float = float('inf')) -> List[str]:
    """Run sections of the GPU check, each within its budget.

    Args:
        settings (Settings): What to measure, and where.
        names (Sequence[str]): The sections to run, keys of :data:`SECTIONS`.
        report (list[str]): Markdown lines; each section's (or why it skipped or failed) are
            appended, and printed as they come.
        out_path (str, optional): Rewrite the report there after each section. Defaults to None.
        time_limit (float): Seconds for all sections; each gets its own budget or what is left
            of this, whichever is less. Defaults to no limit.

    Returns:
        list[str]: ``report``.
    """
    deadline = time.perf_counter() + time_limit
    for name in names:
        title, function, budget = SECTIONS[name]
        begin = time.perf_counter()
        budget = min(budget, deadline - begin)
        try:
            if budget < 5:
                raise SectionSkipped(f'the run\'s time limit of {time_limit:.0f} s is spent')
            body = function(settings, budget)
            status = ''
        except SectionSkipped as reason:
            body, status = [f'skipped: {reason}'], 'skipped'
        except Exception as error:  # noqa: BLE001  report it; the next section still runs
            body = [f'**failed**: {type(error).__name__}: {error}', '', '```', traceback.format_exc()[-3000:], '```']
            status = 'failed'
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        lines = [f'## {title}', ''] + body + ['', f'({time.perf_counter() - begin:.0f} s)', '']
        report.extend(lines)
        report.append('')
        print('\n'.join(lines), flush=True)
        if status:
            report.append(f'<!-- {name}: {status} -->')
        if out_path:
            write_report(report, out_path)
    return report


def write_report(report: List[str], path: str) -> None:
    """Write the report's lines to ``path``, its folder made if missing.

    Args:
        report (list[str]): The Markdown lines.
        path (str): The file to write.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as file:
        file.write('\n'.join(report) + '\n')

