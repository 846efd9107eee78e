"""Everything a CUDA machine has to say about mmfocal, in one run and one markdown report.

    python benchmarks/gpu_check.py --out $OUT/gpu_report.md   # on a GPU: sections within --time-limit (420 s)
    python benchmarks/gpu_check.py --quick                    # tiny sizes; without CUDA the GPU sections skip
    python benchmarks/gpu_check.py --quick --device cpu       # the GPU sections' machinery, run on the CPU

Sections, each with its own time budget (a section that fails or runs out of time says so, and
the next one runs):

1. environment: GPU, torch, CUDA, cuDNN, mmcv (whether its ops have CUDA kernels), mmdet.
2. tests: the test suite's device tests (attention paths against their float64 references,
   bfloat16 autocast, the kernel's bias forms) with MMFOCAL_TEST_DEVICE=cuda.
3. parity: every attention path on the GPU (inference: scaled_dot_product_attention; training:
   the recomputing kernel; training with attention dropout: plain autograd) against the CPU
   float32 path, same weights and input, Focal-T and Focal-fast-T at 800x1344 and 512x512, TF32
   off: outputs within 1e-4 and gradients (input and every parameter) within 1e-3, each relative
   to the tensor's largest value (outputs: at least 1; gradients: see largest_errors).
4. amp: Mask R-CNN Focal-T (configs/det/mask_rcnn_focal_t_1x.py) training steps under fp16
   (with a GradScaler) and bf16 autocast on a synthetic batch of 2 images: finite losses and
   gradients; bf16 also with torchvision's RoIAlign (mmcv's has no bf16 kernel).
5. speed: Focal-T and Focal-fast-T against mmdet's Swin-T (benchmarks/backbone_speed.py):
   forward and forward+backward time (CUDA events, median of 10 after warm-up) and peak memory
   at 2x3x800x1344 and 2x3x512x512, fp32, bf16 and fp16 autocast, with the ratios to Swin-T.
6. mask_rcnn: one whole Mask R-CNN training iteration (forward, backward, AdamW step), Focal-T
   against mmdet's own Swin-T Mask R-CNN config (same neck and heads), batch 2, fp32, fp16 and bf16.

Without CUDA the GPU sections (2-6) say 'skipped: no CUDA device'. Mask R-CNN needs mmcv's
compiled ops (RoIAlign, NMS) on the GPU: where mmcv was built without CUDA kernels, sections 4
and 6 say so and skip.
"""
import argparse
import contextlib
import copy
import logging
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
import traceback

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import backbone_speed  # noqa: E402  (this folder)

OUTPUT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3
GRADIENT_FLOOR = 1e-3  # see largest_errors
MODELS = {'focal': 'Focal-T', 'fast': 'Focal-fast-T'}
FOCAL_DET_CONFIG = osp.join(ROOT, 'configs', 'det', 'mask_rcnn_focal_t_1x.py')
SWIN_DET_CONFIG = osp.join('swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')  # in mmdet's package
DEVICE_TESTS = ['tests/test_backbone.py', 'tests/test_focal_fast.py']
DEVICE_TEST_SELECTION = 'straightforward or bfloat16 or kernel'
# Small enough for the CPU test of this script: a one-block-per-stage backbone, tiny inputs.
TINY_BACKBONE = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
TORCHVISION_ROI_ALIGN = "torchvision's RoIAlign"


class SectionSkipped(Exception):
    """A section that cannot run here, with the reason."""


class Settings:
    """What one run measures: full sizes, or ``quick`` (tiny model and inputs, few repeats)."""

    def __init__(self, quick: bool, device: str):
        self.quick, self.device = quick, torch.device(device)
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


# ---------------------------------------------------------------------------------------------
# Parity: one model on two devices (or two attention paths), outputs and gradients compared

class KeepEverything(torch.nn.Identity):
    """An attention dropout with p > 0 that drops nothing: selects the plain autograd path."""
    p = 0.5


def build_backbone(name: str, backbone_settings: dict, seed: int = 0) -> torch.nn.Module:
    """Focal-T or Focal-fast-T (or ``backbone_settings``' sizes) without drop path, seeded."""
    from mmfocal import FocalFastTransformer, FocalTransformer
    torch.manual_seed(seed)
    cls = FocalTransformer if name == 'focal' else FocalFastTransformer
    arch = None if backbone_settings else 'tiny'
    return cls(arch=arch, drop_path_rate=0., **backbone_settings)


def run_pass(model: torch.nn.Module, x: torch.Tensor, training: bool):
    """The outputs of ``model(x)`` and, in training, the gradients of the input and every parameter
    against fixed random output gradients; all as float64 CPU tensors, with their names."""
    model.train(training)
    if not training:
        with torch.no_grad():
            return [o.double().cpu() for o in model(x)], []
    x = x.detach().requires_grad_()
    outs = model(x)
    generator = torch.Generator().manual_seed(1)
    grad_outs = [torch.randn(o.shape, generator=generator).to(o.device) for o in outs]
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(outs, (x, ) + params, grad_outs, allow_unused=True)
    grads = [(name, g.double().cpu()) for name, g in zip(('input', ) + names, grads) if g is not None]
    return [o.detach().double().cpu() for o in outs], grads


def largest_errors(reference, tested):
    """(output error, (gradient error, tensor name)): the largest absolute difference over all
    outputs / gradients, relative to the reference tensor's largest value; for outputs at least 1,
    for gradients at least GRADIENT_FLOOR of the largest gradient of all. (The floor is for
    gradients that are zero in exact arithmetic, whose float32 values are rounding noise: the
    output bias of Focal-fast's position-bias MLPs adds the same logit to every key.)"""
    ref_outs, ref_grads = reference
    outs, grads = tested
    output_error = max(float((o - r).abs().max() / r.abs().max().clamp(min=1)) for o, r in zip(outs, ref_outs))
    if not ref_grads:
        return output_error, (0., '')
    tested_grads = dict(grads)
    floor = GRADIENT_FLOOR * max(float(r.abs().max()) for _, r in ref_grads)
    worst = (0., '')
    for name, r in ref_grads:
        if name not in tested_grads:
            return output_error, (float('inf'), f'{name} (no gradient)')
        scale = max(float(r.abs().max()), floor)
        if scale > 0:
            worst = max(worst, (float((tested_grads[name] - r).abs().max()) / scale, name))
    return output_error, worst


PARITY_PATHS = (
    ('inference', False, False),                         # fused forward (scaled_dot_product_attention on a GPU)
    ('training: recomputing kernel', True, False),       # fused forward with log-sum-exp, recomputing backward
    ('training: autograd (attn. dropout)', True, True),  # plain autograd, as with attention dropout
)


def check_parity(name: str, size, batch: int, device, backbone_settings: dict, tested_context=None,
                 paths=PARITY_PATHS) -> list:
    """Rows (path, output error, gradient error, worst tensor, passed) of the model on ``device``
    against the same model on the CPU in float32 (its default path). ``tested_context`` (a context
    manager factory) is entered around the tested runs only: another attention path on the CPU."""
    model = build_backbone(name, backbone_settings)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(2))
    references = {training: run_pass(model, x, training) for training in {p[1] for p in paths}}
    rows = []
    for path, training, autograd_path in paths:
        tested = copy.deepcopy(model).to(device)
        if autograd_path:
            for module in tested.modules():
                if hasattr(module, 'attn_drop'):
                    module.attn_drop = KeepEverything()
        with (tested_context or contextlib.nullcontext)():
            result = run_pass(tested, x.to(device), training)
        output_error, (grad_error, worst) = largest_errors(references[training], result)
        passed = output_error <= OUTPUT_TOLERANCE and grad_error <= GRADIENT_TOLERANCE
        rows.append(dict(path=path, output_error=output_error, gradient_error=grad_error if training else None,
                         worst=worst, passed=passed))
        del tested, result
    return rows


@contextlib.contextmanager
def tf32_disabled():
    """Full float32 products on the GPU (matmuls and cuDNN convolutions), as on the CPU."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision('highest')
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.set_float32_matmul_precision(precision)


def other_devices_path():
    """The attention code of non-CPU devices, run on the CPU (the tests' 'other devices' path),
    through mmfocal's public switch."""
    from mmfocal.models.layers import attention_path
    return attention_path(kernels='generic')


# ---------------------------------------------------------------------------------------------
# Mask R-CNN: models from the configs, a synthetic batch

def mmcv_ops_status() -> str:
    """'cuda <version>' where mmcv's compiled ops have CUDA kernels, else why not."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except Exception as error:  # noqa: BLE001  (any import failure is the answer)
        return f'mmcv.ops not importable ({type(error).__name__}: {error})'
    version = get_compiling_cuda_version()
    return 'no CUDA kernels (mmcv built without CUDA)' if version == 'not available' else f'cuda {version}'


def require_mmcv_cuda_ops(device):
    if device.type == 'cuda' and not mmcv_ops_status().startswith('cuda'):
        raise SectionSkipped(f'Mask R-CNN needs mmcv ops (RoIAlign, NMS) with CUDA kernels: {mmcv_ops_status()}')


def swin_det_config_path() -> str:
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', SWIN_DET_CONFIG)


def build_detector(config_path: str, settings: Settings, torchvision_roi_align: bool = False):
    """The config's model, backbone without a checkpoint (tiny with ``settings.quick``), on the
    device; with ``torchvision_roi_align`` its RoI extractors use torchvision's RoIAlign."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    import mmfocal  # noqa: F401  registers the backbones
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config_path)
    cfg.model.backbone.init_cfg = None
    if settings.quick:
        shrink_detector(cfg.model)
    if torchvision_roi_align:
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            cfg.model.roi_head[extractor].roi_layer.use_torchvision = True
    torch.manual_seed(0)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter
    try:
        model = MODELS.build(cfg.model)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.to(settings.device).train()


def shrink_detector(model, channels: int = 16):
    """The Mask R-CNN ``model`` config at test size (in place): the tiny backbone, ``channels``
    wide neck and heads, few proposals and sampled RoIs."""
    model.backbone.pop('arch', None)
    model.backbone.update(TINY_BACKBONE)
    model.neck.update(in_channels=[TINY_BACKBONE['embed_dims'] * 2**i for i in range(4)], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = roi_head.mask_roi_extractor.out_channels = channels
    roi_head.bbox_head.update(in_channels=channels, fc_out_channels=channels)
    roi_head.mask_head.update(in_channels=channels, conv_out_channels=channels)
    model.train_cfg.rpn_proposal.max_per_img = 50
    model.train_cfg.rcnn.sampler.num = 32


def synthetic_det_batch(size, count: int = 2) -> dict:
    """``count`` images of ``size`` (h, w), each with three boxes and their masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = size
    inputs, samples = [], []
    for i in range(count):
        generator = torch.Generator().manual_seed(i)
        image = torch.randint(0, 60, (3, h, w), dtype=torch.uint8, generator=generator)
        boxes = torch.tensor([[0.1, 0.2, 0.4, 0.7], [0.5, 0.1, 0.9, 0.5], [0.3 + 0.1 * i, 0.5, 0.8, 0.95]])
        boxes = boxes * torch.tensor([w, h, w, h])
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[k, y0:y1, x0:x1] = 1
            image[:, y0:y1, x0:x1] = 80 + 50 * k
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([1, 2, 3]),
                                           masks=BitmapMasks(masks.numpy(), h, w))
        inputs.append(image)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def training_iteration(model, batch, optimizer, dtype=None, scaler=None):
    """Forward (losses), backward and optimizer step; returns (loss, gradients all finite)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(next(model.parameters()).device, dtype):
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach()), finite


# ---------------------------------------------------------------------------------------------
# Sections: each returns markdown lines, or raises SectionSkipped

def require_cuda(settings: Settings):
    if settings.device.type == 'cuda' and not torch.cuda.is_available():
        raise SectionSkipped('no CUDA device')


def section_environment(settings: Settings, budget: float) -> list:
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
    require_cuda(settings)
    python_path = os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    env = dict(os.environ, MMFOCAL_TEST_DEVICE=str(settings.device), PYTHONPATH=python_path)
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *DEVICE_TESTS, '-k',
               DEVICE_TEST_SELECTION]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
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
    model = build_detector(FOCAL_DET_CONFIG, settings, torchvision_roi_align=variant == TORCHVISION_ROI_ALIGN)
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
    """Peak memory (MiB) one pass of ``model`` allocates beyond what was allocated before it."""
    model.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        backbone_speed.step(model, x, backward, dtype)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # the CPU has no allocator statistics: the run's machinery only
        backbone_speed.step(model, x, backward, dtype)
        peak = float('nan')
    model.zero_grad(set_to_none=True)
    return peak


def section_speed(settings: Settings, budget: float) -> list:
    require_cuda(settings)
    start = time.perf_counter()
    names = ['focal', 'fast', 'swin']
    if settings.quick:  # the tiny sizes, Swin's too
        from mmdet.models.backbones import SwinTransformer
        models = {name: build_backbone(name, settings.backbone_settings).to(settings.device) for name in names[:2]}
        models['swin'] = SwinTransformer(**dict(backbone_speed.SWIN_T, **TINY_BACKBONE)).to(settings.device)
    else:
        models = {name: backbone_speed.build(name, str(settings.device)) for name in names}
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
        times = backbone_speed.compare_speed(models, size, settings.speed_batch, settings.repeats, settings.warmup,
                                             str(settings.device), dtype)
        x = torch.randn(settings.speed_batch, 3, *size, device=settings.device)
        for pass_name, backward in (('fwd', False), ('fwd+bwd', True)):
            rounds = times[pass_name]  # seconds per round, per model
            t = {n: statistics.median(v) for n, v in rounds.items()}
            mem = {n: peak_memory_mib(m, x, backward, dtype) for n, m in models.items()}
            lines.append(f'| {settings.speed_batch}x3x{size[0]}x{size[1]} | {_precision_label(dtype)} | {pass_name} | '
                         + ' | '.join(f'{t[n] * 1000:.1f}' for n in names) + ' | '
                         + ' | '.join(f'{mem[n]:.0f}' for n in names) + ' | '
                         + ' | '.join(f'{backbone_speed.paired_ratio(rounds[a], rounds["swin"])[0]:.2f}'
                                      for a in ('focal', 'fast')) + ' | '
                         + ' | '.join(f'{mem[a] / mem["swin"]:.2f}' for a in ('focal', 'fast')) + ' |')
    return lines


def _time_iteration(model, batch, optimizer, dtype, scaler) -> float:
    """Seconds of one :func:`training_iteration` (CUDA events on a GPU)."""
    if next(model.parameters()).is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        training_iteration(model, batch, optimizer, dtype, scaler)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    training_iteration(model, batch, optimizer, dtype, scaler)
    return time.perf_counter() - begin


def section_mask_rcnn(settings: Settings, budget: float) -> list:
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
        model = build_detector(config, settings)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        # fp16 with loss scaling, as tools/train.py --amp trains
        scaler = torch.amp.GradScaler(settings.device.type) if dtype == torch.float16 else None
        for _ in range(settings.det_warmup):
            training_iteration(model, batch, optimizer, dtype, scaler)
        seconds[name] = statistics.median(_time_iteration(model, batch, optimizer, dtype, scaler)
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


def run_sections(settings: Settings, names, report, out_path=None, time_limit: float = float('inf')) -> list:
    """Run the sections ``names``; each one's lines (or why it skipped or failed) go into ``report``,
    which is printed as it grows and rewritten to ``out_path`` after each section. A section gets
    its budget or what is left of ``time_limit`` (seconds for all of them), whichever is less."""
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


def write_report(report, path: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as file:
        file.write('\n'.join(report) + '\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = osp.join(os.environ['OUT'], 'gpu_report.md') if os.environ.get('OUT') else None
    parser.add_argument('--out', default=default_out, help='also write the report here (default: $OUT/gpu_report.md '
                        'when $OUT is set)')
    parser.add_argument('--quick', action='store_true', help='tiny model and inputs, few repeats')
    parser.add_argument('--device', default='cuda', help='where the GPU sections run (default cuda; cpu to check '
                        'their machinery here, the attention then takes the code path of other devices)')
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument('--time-limit', type=float, default=420,
                        help='seconds for all sections (each also has its own budget); default 420')
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    settings = Settings(args.quick, args.device)
    report = [f'# mmfocal GPU check ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})', '',
              f'`{" ".join(["python", "benchmarks/gpu_check.py"] + (argv if argv is not None else sys.argv[1:]))}`', '']
    run_sections(settings, args.sections, report, args.out, args.time_limit)
    report.append(f'Total: {time.perf_counter() - begin:.0f} s')
    print(report[-1])
    if args.out:
        write_report(report, args.out)
        print(f'report written to {args.out}')


if __name__ == '__main__':
    main()
