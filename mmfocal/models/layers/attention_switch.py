"""The process-wide switch over the attention paths, and the one rule that chooses among them.

Both focal attentions compute softmax(q k^T + bias + off_map) v through
:func:`~.attention_kernels.attend`, which takes the path and kernels :func:`choose_path` returns.
:func:`attention_path` forces a path, a chunk size or the fused paths' kernels within a ``with``
block; :func:`explain_path` returns the choice for given inputs with the reasons the faster paths
and kernels were not taken. The paths, the kernels and the tracers: docs/attention_kernels.md.
"""
import contextlib
from typing import Iterator, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from . import compiled_kernels
from .torch_kernels import cpu_flash_kernel_reason, cpu_flash_not_supported_reasons
from .tracing import check_not_traced, is_tracing

ATTENTION_PATHS = ('auto', 'standard_ops', 'autograd', 'recompute', 'fused')
FUSED_KERNELS = ('compiled', 'cpu', 'generic')


class AttentionSettings(NamedTuple):
    """What :func:`attention_path` sets (its arguments; None: the default)."""
    path: str = 'auto'
    chunk_bytes: Optional[int] = None
    kernels: Optional[str] = None


# Process-wide, as torch.backends' switches are; read at each call (also by the backward).
_settings = AttentionSettings()


def attention_settings() -> AttentionSettings:
    """The settings :func:`attention_path` made (the defaults outside it).

    Returns:
        AttentionSettings: The current settings.
    """
    return _settings


@contextlib.contextmanager
def attention_path(path: Optional[str] = None, *, chunk_bytes: Optional[int] = None,
                   kernels: Optional[str] = None) -> Iterator[AttentionSettings]:
    """Within the ``with`` block, every focal attention (both backbones) takes attention ``path``.

    The settings are process-wide (not per thread), restored on leaving the block, and yielded.
    A forced path is taken as given, also under a tracer (forcing ``'fused'`` or ``'recompute'``
    while exporting records a wrong graph); recording attention weights always takes
    ``'autograd'``. How ``'auto'`` chooses: :func:`choose_path`.

    Args:
        path (str, optional): One of :data:`ATTENTION_PATHS`: ``'auto'`` (the automatic choice),
            ``'standard_ops'`` (what exporters get), ``'autograd'`` (applies attention dropout),
            ``'recompute'`` (the fused forward and a recomputing backward) or ``'fused'`` (the
            forward alone). Defaults to None: the current path.
        chunk_bytes (int, optional): The fused kernels on the CPU work on chunks of windows whose
            temporaries stay under this many bytes (at least one window a chunk). Defaults to
            None: the current value (by default :func:`~.chunking.default_chunk_bytes`).
        kernels (str, optional): The fused paths' kernels, one of :data:`FUSED_KERNELS`:
            ``'compiled'`` (mmfocal's, :mod:`.compiled_kernels`), ``'cpu'`` (PyTorch's CPU flash
            kernel over chunks of windows) or ``'generic'`` (``scaled_dot_product_attention`` over
            all windows). Forcing kernels that cannot run is an error saying why. Defaults to
            None: the current route (by default the first of those that can run).

    Yields:
        AttentionSettings: The settings within the block.

    Examples:
        >>> import torch
        >>> from mmfocal.models.layers import FocalTransformerBlock, attention_path
        >>> block = FocalTransformerBlock(16, 2).eval()
        >>> x = torch.randn(1, 14, 14, 16)
        >>> with torch.no_grad():
        ...     fused = block(x)
        ...     with attention_path('standard_ops'):
        ...         standard = block(x)
        >>> torch.allclose(fused, standard, atol=1e-5)
        True
        >>> with attention_path(chunk_bytes=1) as settings:
        ...     settings
        AttentionSettings(path='auto', chunk_bytes=1, kernels=None)
    """
    global _settings
    if path is not None and path not in ATTENTION_PATHS:
        raise ValueError(f'attention path must be one of {ATTENTION_PATHS}, got {path!r}')
    if chunk_bytes is not None and (not isinstance(chunk_bytes, int) or chunk_bytes < 1):
        raise ValueError(f'chunk_bytes must be a positive integer, got {chunk_bytes!r}')
    if kernels is not None and kernels not in FUSED_KERNELS:
        raise ValueError(f'kernels must be one of {FUSED_KERNELS}, got {kernels!r}')
    previous = _settings
    given = dict(path=path, chunk_bytes=chunk_bytes, kernels=kernels)
    _settings = previous._replace(**{k: v for k, v in given.items() if v is not None})
    try:
        yield _settings
    finally:
        _settings = previous


class PathChoice(NamedTuple):
    """The path and kernels :func:`choose_path` chose for one attention call, and why.

    Attributes:
        path (str): One of :data:`ATTENTION_PATHS` but ``'auto'``.
        kernels (str | None): For ``'fused'`` and ``'recompute'``, the kernels they run on, one of
            :data:`FUSED_KERNELS`; None for the other paths.
        why (tuple[str, ...]): Why the faster paths and kernels were not taken, one line each.
    """
    path: str
    kernels: Optional[str]
    why: Tuple[str, ...]


def path_not_supported_reasons(path: str, dropout: float, needs_grad: bool) -> list:
    """Why attention ``path`` cannot compute a call (empty where it can).

    Args:
        path (str): One of :data:`ATTENTION_PATHS` but ``'auto'``.
        dropout (float): The attention dropout probability applied (0 outside training).
        needs_grad (bool): Whether gradients of the attention are needed.

    Returns:
        list[str]: The reasons, phrases following the path's name.
    """
    reasons = []
    if path in ('recompute', 'fused') and dropout > 0:  # the fused kernels cannot replay the dropout
        reasons.append(f'cannot apply attention dropout (p={dropout} in training)')
    if path == 'fused' and needs_grad:
        reasons.append('computes no gradients')
    return reasons


def choose_path(q: torch.Tensor, source: torch.Tensor, bias: torch.Tensor, attn_drop: nn.Module, training: bool,
                record: bool = False, bias_columns=None) -> PathChoice:
    """The rule that chooses the attention path and kernels: written here only.

    With ``record``, ``'autograd'`` (it keeps the weights). Else the path :func:`attention_path`
    forces (refusing what it cannot compute), or for ``'auto'`` the first match of: traced by a
    tracer the layers know (:func:`~.tracing.is_tracing`), ``'standard_ops'``; attention dropout
    in training, ``'autograd'``; gradients needed, ``'recompute'``; else ``'fused'``. An
    unknown tracer about to get a fused path is an error
    (:class:`~.tracing.UnknownTracerError`). The fused paths' kernels: those forced, or the first
    that can run of ``'compiled'``, ``'cpu'`` (CPU tensors only) and ``'generic'``.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Key source, (B, S, 2, heads, d).
        bias (torch.Tensor): Position bias (see :func:`~.chunking.chunk_bias`).
        attn_drop (nn.Module): The attention dropout.
        training (bool): Whether the attention is in training mode.
        record (bool): Whether the attention weights are recorded. Defaults to False.
        bias_columns (optional): Per-window bias columns (:class:`~.chunking.BiasColumns`).
            Defaults to None.

    Returns:
        PathChoice: The path, its kernels and why the faster ones were not taken.
    """
    if record:
        return PathChoice('autograd', None, ('recording attention weights takes the autograd path',))
    path = _settings.path
    dropout = attn_drop.p if training else 0.
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad)
    if path == 'auto':
        if is_tracing(q):
            return PathChoice('standard_ops', None, ('traced for export or compilation',))
        if dropout > 0:
            reasons = path_not_supported_reasons('recompute', dropout, needs_grad)
            return PathChoice('autograd', None, tuple(f"'recompute' and 'fused' {r}" for r in reasons))
        check_not_traced(q, source, bias)  # about to take an eager kernel: refuse unknown tracers
        path = 'recompute' if needs_grad else 'fused'
        why = tuple(f"'fused' {r}" for r in path_not_supported_reasons('fused', dropout, needs_grad))
    else:
        reasons = path_not_supported_reasons(path, dropout, needs_grad)
        if reasons and dropout > 0:
            raise ValueError(f'attention path {path!r} {reasons[0]}: '
                             "take 'autograd' or 'standard_ops', or evaluate the model")
        if reasons:
            raise ValueError(f"attention path 'fused' {reasons[0]}: take 'recompute' (the same forward, "
                             'with a backward) or run under torch.no_grad()')
        why = (f'attention_path({path!r}) forces it',)
    if path not in ('recompute', 'fused'):
        return PathChoice(path, None, why)
    kernels, kernels_why = _choose_kernels(q, source, bias, bias_columns)
    return PathChoice(path, kernels, why + kernels_why)


def explain_path(q: torch.Tensor, source: torch.Tensor, bias: torch.Tensor, attn_drop: Optional[nn.Module] = None,
                 training: bool = False, record: bool = False, bias_columns=None) -> PathChoice:
    """The path and kernels an attention call with these inputs takes, and why the faster ones not.

    Set the logger ``mmfocal.models.layers`` to DEBUG to have each new choice of a forward pass
    logged instead.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Key source, (B, S, 2, heads, d).
        bias (torch.Tensor): Position bias (see :func:`~.chunking.chunk_bias`).
        attn_drop (nn.Module, optional): The attention dropout. Defaults to None: no dropout.
        training (bool): Whether the attention is in training mode. Defaults to False.
        record (bool): Whether the attention weights are recorded. Defaults to False.
        bias_columns (BiasColumns, optional): Per-window bias columns
            (:class:`~.chunking.BiasColumns`). Defaults to None.

    Returns:
        PathChoice: The path, its kernels and why the faster ones were not taken.

    Raises:
        ValueError: If the forced path or kernels cannot compute this attention.
        UnknownTracerError: If an unknown tracer is about to get a fused path.
    """
    return choose_path(q, source, bias, attn_drop if attn_drop is not None else nn.Dropout(0.), training,
                       record, bias_columns)


def _choose_kernels(q, source, bias, bias_columns) -> Tuple[str, Tuple[str, ...]]:
    """The fused paths' kernels (see :func:`choose_path`) and why the faster ones were not taken."""
    forced = _settings.kernels
    why = []
    if forced in (None, 'compiled'):
        reasons = compiled_kernels.not_supported_reasons(q, source, bias, bias_columns)
        if not reasons:
            return 'compiled', ()
        if forced == 'compiled':
            raise ValueError("attention_path(kernels='compiled'): the compiled kernels cannot take this attention: "
                             + '; '.join(reasons))
        why += [f"'compiled' kernels: {r}" for r in reasons]
    else:
        why.append(f"'compiled' kernels: attention_path(kernels={forced!r}) forces others")
    if uses_cpu_kernels(q.device):
        return 'cpu', tuple(why)
    if forced is None:
        why += [f"'cpu' kernels: {r}" for r in cpu_flash_not_supported_reasons(q.device)]
    else:
        why.append(f"'cpu' kernels: attention_path(kernels={forced!r}) forces others")
    return 'generic', tuple(why)


def uses_cpu_kernels(device: torch.device) -> bool:
    """Whether the fused paths (when not on the compiled kernels) take the ``'cpu'`` kernels.

    Those are PyTorch's CPU flash kernel over chunks of windows: by default on CPU tensors where
    this torch has it; forced, an error saying why where they cannot run.

    Args:
        device (torch.device): The inputs' device.

    Returns:
        bool: True for the ``'cpu'`` kernels, False for ``'generic'``.
    """
    if _settings.kernels is None:
        return device.type == 'cpu' and cpu_flash_kernel_reason() is None
    if _settings.kernels == 'cpu' and device.type != 'cpu':
        raise ValueError(f"attention_path(kernels='cpu') runs on CPU tensors only, got a {device.type} tensor")
    if _settings.kernels == 'cpu' and cpu_flash_kernel_reason() is not None:
        raise ValueError(f"attention_path(kernels='cpu'): {cpu_flash_kernel_reason()}; take kernels='generic'")
    return _settings.kernels == 'cpu'
