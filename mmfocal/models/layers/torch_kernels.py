"""PyTorch's attention kernels as the fused paths call them, and what each supports.

Three kernels, each softmax(q k^T + mask) v over a batch of windows (q (..., queries, d), k and v
(..., keys, d), an additive mask broadcasting to (..., queries, keys), scale 1):

- ``'cpu_flash'``: PyTorch's CPU flash kernel with a mask (torch >= 2.3), output and log-sum-exp;
- ``'sdpa'``: ``scaled_dot_product_attention``, the output alone (any device);
- ``'with_lse'``: matmul and softmax, the output and log-sum-exp (any device).

:func:`kernel` looks one up; :func:`override_kernel` replaces one within a ``with`` block (a
deliberate fault, for checks that must fail on a wrong kernel).
"""
import contextlib
import functools
from typing import Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

CPU_FLASH_KERNEL = '_scaled_dot_product_flash_attention_for_cpu'


@functools.lru_cache(maxsize=None)
def cpu_flash_kernel_reason() -> Optional[str]:
    """Why this torch has no CPU flash kernel with an additive mask, or None where it has one.

    The ``'cpu'`` route needs ``aten::_scaled_dot_product_flash_attention_for_cpu`` with
    ``attn_mask`` (torch >= 2.3; 2.2 has it without the mask, 2.1 not at all). Without it the CPU
    takes the ``'generic'`` route, the same function within float rounding.

    Returns:
        str | None: The reason, or None.
    """
    op = getattr(torch.ops.aten, CPU_FLASH_KERNEL, None)
    if op is None or not any(argument.name == 'attn_mask' for argument in op.default._schema.arguments):
        return (f'torch {torch.__version__} has no CPU flash attention kernel with a mask (aten::{CPU_FLASH_KERNEL} '
                'with attn_mask, torch >= 2.3)')
    return None


def cpu_flash_not_supported_reasons(device: torch.device) -> List[str]:
    """Why the CPU flash kernel cannot run on ``device`` here (empty where it can).

    Args:
        device (torch.device): The inputs' device.

    Returns:
        list[str]: The reasons.
    """
    reasons = []
    if device.type != 'cpu':
        reasons.append(f'it runs on CPU tensors, got a {device.type} tensor')
    if cpu_flash_kernel_reason() is not None:
        reasons.append(cpu_flash_kernel_reason())
    return reasons


def cpu_flash_attention(q, k, v, mask) -> Tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's CPU flash kernel: softmax(q k^T + mask) v and the log-sum-exp, scale 1.

    Args:
        q (torch.Tensor): Queries, (..., queries, d).
        k (torch.Tensor): Keys, (..., keys, d).
        v (torch.Tensor): Values, (..., keys, d).
        mask (torch.Tensor): Additive, broadcasting to (..., queries, keys).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The output (..., queries, d) and the log-sum-exp
        (..., queries).
    """
    return getattr(torch.ops.aten, CPU_FLASH_KERNEL)(q, k, v, 0.0, False, attn_mask=mask, scale=1.0)


def sdpa(q, k, v, mask) -> torch.Tensor:
    """``scaled_dot_product_attention`` with scale 1: softmax(q k^T + mask) v.

    Args:
        q (torch.Tensor): Queries, (..., queries, d).
        k (torch.Tensor): Keys, (..., keys, d).
        v (torch.Tensor): Values, (..., keys, d).
        mask (torch.Tensor): Additive, broadcasting to (..., queries, keys).

    Returns:
        torch.Tensor: The output, (..., queries, d).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def attend_with_lse(q, k, v, mask) -> Tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T + mask) v and the log-sum-exp of each query, in matmul and softmax.

    Scores in float32 (float64 for float64 inputs) whatever the inputs, as fused kernels keep them
    and as the backward recomputes them: probabilities from scores rounded to bf16 would not be
    the ones the backward differentiates. The probabilities go to the values' dtype for the last
    product, as in the fused kernels.

    Args:
        q (torch.Tensor): Queries, (..., queries, d).
        k (torch.Tensor): Keys, (..., keys, d).
        v (torch.Tensor): Values, (..., keys, d).
        mask (torch.Tensor): Additive, broadcasting to (..., queries, keys).

    Returns:
        tuple[torch.Tensor, torch.Tensor]: The output (..., queries, d) and the log-sum-exp
        (..., queries), at least float32.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = q.to(dtype) @ k.to(dtype).transpose(-2, -1) + mask.to(dtype)
        lse = scores.logsumexp(-1)
        return (scores - lse.unsqueeze(-1)).exp_().to(v.dtype) @ v, lse


KERNELS = {'cpu_flash': cpu_flash_attention, 'sdpa': sdpa, 'with_lse': attend_with_lse}
_overrides = {}


def kernel(name: str) -> Callable:
    """The kernel the fused paths call for ``name`` (one of :data:`KERNELS`), overridden or not."""
    return _overrides.get(name, KERNELS[name])


@contextlib.contextmanager
def override_kernel(name: str, replacement: Callable) -> Iterator[None]:
    """Within the ``with`` block, the fused paths call ``replacement`` for kernel ``name``.

    For deliberate faults: a check of the attention paths must fail on a wrong kernel.

    Args:
        name (str): One of :data:`KERNELS`: ``'cpu_flash'``, ``'sdpa'`` or ``'with_lse'``.
        replacement (Callable): Takes and returns what the kernel does.

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import torch_kernels
        >>> def shifted(*args):
        ...     out, lse = torch_kernels.attend_with_lse(*args)
        ...     return out, lse + 0.01
        >>> with torch_kernels.override_kernel('with_lse', shifted):
        ...     torch_kernels.kernel('with_lse') is shifted
        True
    """
    if name not in KERNELS:
        raise ValueError(f'kernel must be one of {tuple(KERNELS)}, got {name!r}')
    previous = _overrides.get(name)
    _overrides[name] = replacement
    try:
        yield
    finally:
        if previous is None:
            del _overrides[name]
        else:
            _overrides[name] = previous
