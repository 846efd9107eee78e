"""Whether a forward pass is being traced (for export or compilation) rather than run eagerly.

One job: telling traced inputs from eager ones. The layers ask :func:`is_tracing` where a traced
graph needs another form than eager execution: no Python branch on a (possibly symbolic) size,
and the attention in standard ops (see :mod:`.attention_kernels`). :func:`unclassified_tracing`
recognises the tracers that :func:`is_tracing` does not, so that the eager attention kernels
refuse them (:func:`check_not_traced`) instead of being recorded into a wrong graph.

Tracers :func:`is_tracing` recognises (their inputs take the standard-ops path automatically):

- the TorchScript tracer: ``torch.jit.trace``, ``torch.onnx.export(..., dynamo=False)``, and the
  FLOP counters built on it (fvcore, ``mmengine.analysis.FlopAnalyzer``);
- Dynamo: ``torch.compile`` and ``torch.export`` (strict and non-strict), hence also
  ``torch.onnx.export(..., dynamo=True)``;
- fake tensors (``FakeTensorMode``, ``make_fx(tracing_mode='fake' or 'symbolic')``).

Recognised as tracing by :func:`unclassified_tracing` only (the eager kernels refuse them; a
path must be chosen with :func:`~.attention_kernels.attention_path`): an active
``TorchDispatchMode`` (``make_fx`` with real tensors, ``FlopCounterMode``, any op recorder), an
FX ``Proxy``, a tensor subclass, functionalized tensors (``torch.func.functionalize``) and
tensors wrapped by a ``torch.func`` transform (``vmap``, ``grad``).
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
    """Whether ``x`` is being traced for export or compilation by a tracer the layers know (see the
    module docstring); then they take forms that trace correctly and for any size."""
    if is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(x)


def unclassified_tracing(*tensors) -> Optional[str]:
    """What traces or intercepts ``tensors`` that :func:`is_tracing` does not classify, in words;
    None for plain eager tensors. Call it only where :func:`is_tracing` is False (Dynamo cannot
    trace these checks)."""
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
    """Raise :class:`UnknownTracerError` where :func:`unclassified_tracing` finds a tracer."""
    tracer = unclassified_tracing(*tensors)
    if tracer is not None:
        raise UnknownTracerError(
            f'the eager focal-attention kernels were called on traced inputs: {tracer}. The automatic '
            'path choice only recognises torch.jit.trace, torch.onnx.export, torch.compile, torch.export '
            'and fake tensors; traced otherwise, the eager kernels (preallocated output buffers written '
            'in place, a private ATen kernel) record a wrong graph. Choose the path for this trace: '
            "with mmfocal.models.layers.attention_path('standard_ops'): ... (what exporters get), or "
            "attention_path('fused') to run the eager kernels anyway (e.g. under an op counter).")
