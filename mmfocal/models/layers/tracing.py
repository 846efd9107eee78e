"""Whether a forward pass is being traced (for export or compilation) rather than run eagerly.

One job: telling traced inputs from eager ones. The layers ask :func:`is_tracing` where a traced
graph needs another form than eager execution (no Python branch on a possibly symbolic size; the
attention path, by the rule of :func:`~.attention_switch.choose_path`). :func:`unclassified_tracing`
recognises the tracers that :func:`is_tracing` does not, so that the eager attention kernels
refuse them (:func:`check_not_traced`) instead of being recorded into a wrong graph. Which tracer
falls where: docs/attention_kernels.md ("Tracers").
"""
from typing import Optional

import torch
import torch.nn as nn
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

try:  # torch >= 2.3
    from torch.compiler import is_compiling
except ImportError:  # torch 2.1 and 2.2: Dynamo's own, which it reads as True while tracing
    from torch._dynamo import is_compiling


class UnknownTracerError(RuntimeError):
    """The eager attention kernels got inputs traced by something :func:`is_tracing` does not know."""


def is_tracing(x: torch.Tensor) -> bool:
    """Whether ``x`` is traced for export or compilation by a tracer the layers know.

    Those are the TorchScript tracer (``torch.jit.trace``, ``torch.onnx.export(..., dynamo=False)``),
    Dynamo (``torch.compile``, ``torch.export``) and fake tensors; the layers then take forms that
    trace correctly and for any size.

    Args:
        x (torch.Tensor): An input of the forward pass.

    Returns:
        bool: Whether it is traced so.
    """
    if is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(x)


def unclassified_tracing(*tensors) -> Optional[str]:
    """What traces or intercepts ``tensors`` that :func:`is_tracing` does not classify.

    An active ``TorchDispatchMode`` (``make_fx`` with real tensors, ``FlopCounterMode``), an FX
    ``Proxy``, a tensor subclass, a functionalized tensor or one wrapped by a ``torch.func``
    transform. Call it only where :func:`is_tracing` is False (Dynamo cannot trace these checks).

    Args:
        *tensors: The inputs to check.

    Returns:
        str | None: The tracer in words, or None for plain eager tensors.
    """
    modes = _get_current_dispatch_mode_stack()
    if modes:
        names = ', '.join(type(mode).__name__ for mode in modes)
        return f'a TorchDispatchMode that sees every op is active ({names}: make_fx, an op counter or recorder)'
    for t in tensors:
        if isinstance(t, torch.fx.Proxy):
            return 'an FX Proxy (torch.fx symbolic tracing)'
        if not isinstance(t, torch.Tensor):
            continue
        if type(t) not in (torch.Tensor, nn.Parameter):
            return f'a tensor subclass ({type(t).__name__})'
        if torch._is_functional_tensor(t):
            return 'a functionalized tensor (torch.func.functionalize)'
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return 'a tensor wrapped by a torch.func transform (vmap, grad, jacrev, ...)'
    return None


def check_not_traced(*tensors) -> None:
    """Raise :class:`UnknownTracerError` where :func:`unclassified_tracing` finds a tracer.

    Args:
        *tensors: The inputs the eager kernels are about to take.
    """
    tracer = unclassified_tracing(*tensors)
    if tracer is not None:
        raise UnknownTracerError(
            f'the eager focal-attention kernels were called on traced inputs: {tracer}. The automatic '
            'path choice only recognises torch.jit.trace, torch.onnx.export, torch.compile, torch.export '
            'and fake tensors; traced otherwise, the eager kernels (preallocated output buffers written '
            'in place, a private ATen kernel) record a wrong graph. Choose the path for this trace: '
            "with mmfocal.models.layers.attention_path('standard_ops'): ... (what exporters get), or "
            "attention_path('fused') to run the eager kernels anyway (e.g. under an op counter).")
