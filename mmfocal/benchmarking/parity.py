"""Parity of the attention paths: one model on two devices (or two attention paths), outputs and
gradients compared (the GPU check's parity section, :mod:`mmfocal.benchmarking.gpu_check`)."""
import contextlib
import copy
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple

import torch

from ..models.backbones import FocalFastTransformer, FocalTransformer
from ..models.layers import attention_path

__all__ = ['OUTPUT_TOLERANCE', 'GRADIENT_TOLERANCE', 'GRADIENT_FLOOR', 'MODELS', 'TINY_BACKBONE', 'PARITY_PATHS',
           'KeepEverything', 'build_parity_backbone', 'run_pass', 'largest_errors', 'check_parity', 'tf32_disabled',
           'other_devices_path']

OUTPUT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3
GRADIENT_FLOOR = 1e-3  # see largest_errors
MODELS = {'focal': 'Focal-T', 'fast': 'Focal-fast-T'}
# Small enough for a check on the CPU: a one-block-per-stage backbone, for tiny inputs.
TINY_BACKBONE = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))


class KeepEverything(torch.nn.Identity):
    """An attention dropout with p > 0 that drops nothing: selects the plain autograd path."""
    p = 0.5


def build_parity_backbone(name: str, backbone_settings: dict, seed: int = 0) -> torch.nn.Module:
    """Focal-T or Focal-fast-T without drop path, seeded.

    Args:
        name (str): ``'focal'`` or ``'fast'`` (the keys of :data:`MODELS`).
        backbone_settings (dict): Sizes that replace the tiny arch's (:data:`TINY_BACKBONE` at
            test size); empty for Focal-T's own.
        seed (int): Seed of the random weights. Defaults to 0.

    Returns:
        torch.nn.Module: The backbone, on the CPU.
    """
    torch.manual_seed(seed)
    cls = FocalTransformer if name == 'focal' else FocalFastTransformer
    arch = None if backbone_settings else 'tiny'
    return cls(arch=arch, drop_path_rate=0., **backbone_settings)


def run_pass(model: torch.nn.Module, x: torch.Tensor, training: bool) -> Tuple[list, list]:
    """One pass of ``model`` on ``x``, its results as float64 CPU tensors.

    Args:
        model (torch.nn.Module): A backbone returning a sequence of feature maps.
        x (torch.Tensor): The input, shape (N, 3, H, W), on the model's device.
        training (bool): Train mode with gradients if True, else eval mode without them.

    Returns:
        tuple[list, list]: The outputs; and in training the gradients of the input and of every
        parameter against fixed random output gradients, as (name, gradient) pairs (the input's
        named ``'input'``), else an empty list.
    """
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


def largest_errors(reference: Tuple[list, list], tested: Tuple[list, list]) -> Tuple[float, Tuple[float, str]]:
    """The largest errors of one pass against another.

    Args:
        reference (tuple[list, list]): A :func:`run_pass` result to compare against.
        tested (tuple[list, list]): A :func:`run_pass` result of the same model and input.

    Returns:
        tuple[float, tuple[float, str]]: The output error and (the gradient error, the name of
        the tensor it is of): the largest absolute difference over all outputs (gradients),
        relative to the reference tensor's largest value, for outputs at least 1, for gradients
        at least :data:`GRADIENT_FLOOR` times the largest gradient of all. The floor is for
        gradients that are zero in exact arithmetic, whose float32 values are rounding noise (the
        output bias of Focal-fast's position-bias MLPs adds the same logit to every key). A
        gradient missing from ``tested`` is an infinite error.
    """
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


# (label, training, with attention dropout): the attention path each pass takes on a GPU.
PARITY_PATHS = (
    ('inference', False, False),                         # fused forward (scaled_dot_product_attention on a GPU)
    ('training: recomputing kernel', True, False),       # fused forward with log-sum-exp, recomputing backward
    ('training: autograd (attn. dropout)', True, True),  # plain autograd, as with attention dropout
)


def check_parity(name: str, size: Sequence[int], batch: int, device: torch.device, backbone_settings: dict,
                 tested_context: Optional[Callable] = None, paths: Sequence[tuple] = PARITY_PATHS) -> List[dict]:
    """A backbone on ``device`` against the same backbone on the CPU in float32 (its default path).

    Args:
        name (str): ``'focal'`` or ``'fast'`` (:data:`MODELS`).
        size (Sequence[int]): The input's (H, W).
        batch (int): The input's batch size.
        device (torch.device): Where the tested runs go.
        backbone_settings (dict): As :func:`build_parity_backbone`.
        tested_context (Callable, optional): A context manager factory entered around the tested
            runs only, e.g. :func:`other_devices_path` to test another attention path on the CPU.
            Defaults to None.
        paths (Sequence[tuple]): (label, training, with attention dropout) of each tested pass.
            Defaults to :data:`PARITY_PATHS`.

    Returns:
        list[dict]: One row per path: ``path``, ``output_error``, ``gradient_error`` (None
        without training), ``worst`` (the tensor of the largest gradient error) and ``passed``
        (both errors within :data:`OUTPUT_TOLERANCE` and :data:`GRADIENT_TOLERANCE`).
    """
    model = build_parity_backbone(name, backbone_settings)
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


def other_devices_path() -> ContextManager:
    """The attention code of non-CPU devices, run on the CPU (the tests' 'other devices' path),
    through mmfocal's public switch :func:`~mmfocal.models.layers.attention_path`."""
    return attention_path(kernels='generic')

