"""The attention kernels of both focal attentions, and the one switch that chooses among them.

One job: softmax(q k^T + bias + off_map) v for every query window, given where each window's keys
come from. Shapes, for B images of nW windows of w*w queries, ``heads`` heads of ``d`` channels:
q (B*nW, w*w, heads, d); a key source (B, S, 2, heads, d) holding every key and value any window
uses; ``index`` (nW * keys,) into it; a position bias (see :func:`_chunk_bias` for its three forms);
``off_map`` (nW, keys), a logit per key. Out: (B*nW, w*w, heads, d).

The paths, all the same math (tests/test_backbone.py and tests/test_focal_fast.py check each
against a straightforward float64 implementation, outputs and gradients):

- ``'fused'``: the forward alone, by fused attention calls over chunks of windows (inference);
- ``'recompute'``: the same fused forward, and a backward that recomputes the attention from the
  saved queries and key source instead of keeping it (:class:`_FocalAttentionCore`; training);

  both on the CPU by mmfocal's compiled kernels (:mod:`.compiled_kernels`,
  :class:`_CompiledFocalAttention`) where they apply and build (FocalTransformer's attention in
  float32), else by PyTorch's flash kernel over chunks of windows;
- ``'autograd'``: gather, matmul and softmax under autograd, which can apply attention dropout
  and keep the attention weights;
- ``'standard_ops'``: :func:`attend_with_standard_ops`, every window at once in ops every tracer
  records correctly (export, compilation).

:func:`attend` is the switch. It chooses by itself (``'auto'``) unless :func:`attention_path`
forces a path. The fused paths are "eager kernels": they write into preallocated buffers and call
a private ATen kernel on the CPU, which a tracer records wrongly, so the automatic choice refuses
inputs traced by a tracer it does not know (:func:`~.tracing.check_not_traced`).
"""
import contextlib
import functools
import os
from typing import Iterator, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import compiled_kernels
from .tracing import check_not_traced, is_tracing

ATTENTION_PATHS = ('auto', 'standard_ops', 'autograd', 'recompute', 'fused')
FUSED_KERNELS = ('compiled', 'cpu', 'generic')
CPU_FLASH_KERNEL = '_scaled_dot_product_flash_attention_for_cpu'


# On the CPU the kernels work in chunks of windows, each operator streaming through a chunk's
# temporaries (gathered keys and values, biases, probabilities, score gradients) before the next
# one reads them. The chunk takes the L2 caches of the threads that share the work, within the
# range where a sweep found the size not to matter (docs/speed.md: 2 to 16 MiB on two threads
# equal within the noise): below about 1 MiB per thread the operator calls of each chunk show
# (0.5 MiB on two threads: 8-15% slower), above 16 MiB the larger temporaries (32 and 64 MiB: up
# to 9% and 22% slower at 800x1344). Other devices want large batched kernels: one chunk.
FALLBACK_L2_BYTES = 2**20  # where the machine does not tell its L2 size
MIN_CHUNK_BYTES_PER_THREAD = 2**20
MAX_CHUNK_BYTES = 16 * 2**20


@functools.lru_cache(maxsize=None)
def l2_cache_bytes() -> int:
    """The L2 cache of one core, in bytes: Linux's sysfs for CPU 0, else :data:`FALLBACK_L2_BYTES`."""
    root = '/sys/devices/system/cpu/cpu0/cache'
    try:
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            with open(os.path.join(path, 'level')) as f:
                level = f.read().strip()
            with open(os.path.join(path, 'type')) as f:
                kind = f.read().strip()
            if level == '2' and kind in ('Unified', 'Data'):
                with open(os.path.join(path, 'size')) as f:
                    return _parse_cache_size(f.read())
    except (OSError, ValueError):
        pass
    return FALLBACK_L2_BYTES


def _parse_cache_size(text: str) -> int:
    """sysfs's cache sizes: '2048K', '1M', or bytes."""
    text = text.strip().upper()
    units = {'K': 2**10, 'M': 2**20, 'G': 2**30}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def default_chunk_bytes() -> int:
    """The CPU kernels' chunk size unless :func:`attention_path` sets one: the L2 cache of one
    core (at least :data:`MIN_CHUNK_BYTES_PER_THREAD`) times the threads PyTorch uses, at most
    :data:`MAX_CHUNK_BYTES`; read at each call, so ``torch.set_num_threads`` counts."""
    per_thread = max(l2_cache_bytes(), MIN_CHUNK_BYTES_PER_THREAD)
    return min(per_thread * torch.get_num_threads(), MAX_CHUNK_BYTES)


class AttentionSettings(NamedTuple):
    """What :func:`attention_path` sets: see there."""
    path: str = 'auto'
    chunk_bytes: Optional[int] = None
    kernels: Optional[str] = None


# Process-wide, as torch.backends' switches are; read at each call (also by the backward).
_settings = AttentionSettings()


def attention_settings() -> AttentionSettings:
    """The settings :func:`attention_path` made (the defaults outside it)."""
    return _settings


@contextlib.contextmanager
def attention_path(path: Optional[str] = None, *, chunk_bytes: Optional[int] = None,
                   kernels: Optional[str] = None) -> Iterator[AttentionSettings]:
    """Within the ``with`` block, every focal attention (both backbones) takes attention ``path``.

    Args:
        path: None keeps the current path; else one of

            - ``'auto'`` (the default): the automatic choice, first match: traced by a tracer the
              layers know (see below), ``'standard_ops'``; attention dropout in training,
              ``'autograd'``; gradients needed, ``'recompute'``; else ``'fused'``;
            - ``'standard_ops'``: every window at once in standard ops (what exporters get);
            - ``'autograd'``: gather, matmul and softmax under autograd (applies attention dropout);
            - ``'recompute'``: the fused forward and the recomputing backward (no attention dropout);
            - ``'fused'``: the fused forward alone (no gradients, no attention dropout).

            A forced path is taken as given, also under a tracer: forcing ``'fused'`` or
            ``'recompute'`` while exporting records a wrong graph (tests/test_deployment.py shows
            the constant output it gives). Recording attention weights (``record_attention``)
            always takes ``'autograd'``.
        chunk_bytes: the fused kernels on the CPU work on chunks of windows whose temporaries stay
            under this many bytes (at least one window per chunk); None keeps the current value
            (by default :func:`default_chunk_bytes`, derived from this machine's L2 cache).
        kernels: the fused kernels' route: ``'compiled'``, mmfocal's compiled CPU kernels
            (:mod:`.compiled_kernels`: FocalTransformer's attention in float32 on the CPU; forcing
            them elsewhere, or where they cannot be built, is an error saying why); ``'cpu'``,
            PyTorch's CPU flash kernel over chunks of windows (CPU tensors only); or ``'generic'``,
            ``scaled_dot_product_attention`` (and matmul and softmax where the backward needs the
            log-sum-exp) over all windows at once. None keeps the current route (by default on the
            CPU ``'compiled'`` where those kernels apply and build, else ``'cpu'``; ``'generic'``
            elsewhere; ``'generic'`` also on the CPU under torch < 2.3, which lacks the CPU flash
            kernel with a mask: forcing ``'cpu'`` there is an error naming the version).

    Tracers the automatic choice knows (:func:`~.tracing.is_tracing`), which get ``'standard_ops'``
    by themselves: ``torch.jit.trace`` (so ``torch.onnx.export(..., dynamo=False)`` and the FLOP
    counters built on it: fvcore, ``mmengine.analysis.FlopAnalyzer``), Dynamo (``torch.compile``,
    ``torch.export`` strict and non-strict, so ``torch.onnx.export(..., dynamo=True)``) and fake
    tensors (``FakeTensorMode``, ``make_fx`` in fake or symbolic mode). Anything else that traces
    or intercepts the inputs (an active ``TorchDispatchMode``: ``make_fx`` with real tensors,
    ``FlopCounterMode``; FX proxies; tensor subclasses; functionalized or ``torch.func``-wrapped
    tensors) makes ``'auto'`` raise :class:`~.tracing.UnknownTracerError` where it would take an
    eager kernel: choose the path for such a tracer with this switch.

    The settings are process-wide (not per thread), restored on leaving the block, and yielded.

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


def attend(q, source, index, bias, off_map, attn_drop: nn.Module, training: bool, record: bool = False,
           bias_columns=None):
    """softmax(q k^T + bias + off_map) v: the one switch over the attention paths, for both focal
    attentions. Arguments as :func:`_attend_fused` (``bias`` and ``bias_columns`` as
    :func:`_chunk_bias` takes them). Returns (out, weights); weights (B*nW, heads, w*w, keys) only
    with ``record``, else None.

    ``record`` takes the autograd path and keeps the weights (the attention-map analysis);
    otherwise the path :func:`attention_path` forces, or by default the automatic choice, first
    match: traced by a known tracer, ``'standard_ops'``; attention dropout in training,
    ``'autograd'`` (the fused kernels cannot replay it); gradients needed, ``'recompute'``;
    else ``'fused'``.
    """
    args = (q, source, index, bias, off_map)
    if record:
        return _attend_with_autograd(*args, attn_drop, return_weights=True, bias_columns=bias_columns)
    path = _choose_path(q, source, bias, attn_drop, training)
    if path == 'standard_ops':
        out = attend_with_standard_ops(*args, attn_drop, bias_columns=bias_columns)
    elif path == 'autograd':
        out = _attend_with_autograd(*args, attn_drop, bias_columns=bias_columns)
    elif path in ('recompute', 'fused') and _takes_compiled_kernels(q, source, bias, bias_columns):
        if path == 'recompute':
            out = _CompiledFocalAttention.apply(*args)
        else:
            out = compiled_kernels.forward(*_compiled_inputs(*args))[0]
    elif path == 'recompute':
        out = _FocalAttentionCore.apply(*args, bias_columns)
    else:
        out = _attend_fused(*args, need_lse=False, bias_columns=bias_columns)[0]
    return out, None


def _choose_path(q, source, bias, attn_drop: nn.Module, training: bool) -> str:
    """The path :func:`attend` takes (without ``record``); see there."""
    path = _settings.path
    dropout = training and attn_drop.p > 0
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad)
    if path == 'auto':
        if is_tracing(q):
            return 'standard_ops'
        if dropout:
            return 'autograd'
        check_not_traced(q, source, bias)  # about to take an eager kernel: refuse unknown tracers
        return 'recompute' if needs_grad else 'fused'
    if dropout and path in ('recompute', 'fused'):
        raise ValueError(f'attention path {path!r} cannot apply attention dropout (p={attn_drop.p} in training): '
                         "take 'autograd' or 'standard_ops', or evaluate the model")
    if needs_grad and path == 'fused':
        raise ValueError("attention path 'fused' computes no gradients: take 'recompute' (the same forward, "
                         'with a backward) or run under torch.no_grad()')
    return path


def attend_with_standard_ops(q, source, index, bias, off_map, attn_drop: Optional[nn.Module] = None,
                             bias_columns=None):
    """softmax(q k^T + bias + off_map) v in standard ops (gather, matmul, softmax), for export and
    compilation: every window at once, no in-place writes, no private kernels, no Python branch on
    sizes or values.

    Arguments as :func:`_attend_fused`: q (B*nW, w*w, heads, d); source (B, S, 2, heads, d); index
    (nW * keys,); bias and ``bias_columns`` as :func:`_chunk_bias` takes them; off_map (nW, keys).
    ``attn_drop`` acts on the probabilities (in training). Returns (B*nW, w*w, heads, d).
    """
    batch, _, _, heads, head_dims = source.shape
    window_area = q.shape[1]
    num_keys = off_map.shape[-1]
    # Heads ahead of the windows, as the batched MatMuls want them: one transpose of the key source
    # (about the map's size) instead of two of the gathered keys and values (keys times larger).
    keys, values = source.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, S, d) each
    k = keys.index_select(2, index).view(batch, heads, -1, num_keys, head_dims)  # (B, heads, nW, keys, d)
    v = values.index_select(2, index).view(batch, heads, -1, num_keys, head_dims)
    q_by_head = q.view(batch, -1, window_area, heads, head_dims).permute(0, 3, 1, 2, 4)  # (B, heads, nW, w*w, d)
    # (heads, nW or 1, w*w, keys). A shared bias skips _chunk_bias: a slice of the (symbolic) window
    # count inside its _Chunk would pin that count in a guard, recompiling for every size.
    if bias_columns is not None or bias.dim() == 4:
        bias = _chunk_bias(bias, bias_columns, slice(0, off_map.shape[0]))
    else:
        bias = bias.unsqueeze(1)
    scores = q_by_head @ k.transpose(-2, -1) + bias + off_map[:, None, :]
    probs = scores.softmax(-1)
    if attn_drop is not None:
        probs = attn_drop(probs)
    return (probs @ v).permute(0, 2, 3, 1, 4).reshape(q.shape)


def _attend_with_autograd(q, source, index, bias, off_map, attn_drop: nn.Module, return_weights: bool = False,
                          bias_columns=None):
    """Plain autograd path: with attention dropout (the fused kernels cannot replay it), and when
    the attention weights are recorded (``return_weights``: also returns them, (B*nW, heads, w*w,
    keys), after dropout). ``bias`` as in :func:`_chunk_bias`."""
    num_windows = off_map.shape[0]
    if bias_columns is not None or bias.dim() == 4:  # one bias per window: (nW, heads, w*w, keys)
        bias = _chunk_bias(bias, bias_columns, slice(0, num_windows)).transpose(0, 1)
    k, v = _gather_keys(source, index, num_windows)
    q = q.transpose(1, 2)
    attn = q @ k.transpose(-2, -1)
    batch = q.shape[0] // num_windows
    attn = attn.view(batch, num_windows, *attn.shape[1:]) + bias + off_map[:, None, None, :]
    attn = attn_drop(attn.softmax(-1)).flatten(0, 1)
    out = (attn @ v).transpose(1, 2)
    return (out, attn) if return_weights else out


def _gather_keys(source: torch.Tensor, index: torch.Tensor, num_windows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of every window: (B*nW, heads, num_keys, d) each, as strided views."""
    batch, _, _, heads, head_dims = source.shape
    kv = source.index_select(1, index).view(batch * num_windows, -1, 2, heads, head_dims)
    return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)


def _attend_fused(q, source, index, bias, off_map, need_lse: bool = True, bias_columns=None,
                  windows_off_map: Optional[list] = None):
    """softmax(q k^T + bias + off_map) v, by fused attention calls over chunks of windows.

    q (B*nW, w*w, heads, d); source (B, S, 2, heads, d); bias (heads, w*w, keys), or per window as
    :func:`_chunk_bias` describes; off_map (nW, keys). Returns the output (B*nW, w*w, heads, d)
    and, if ``need_lse``, the log-sum-exp (B*nW, heads, w*w) for the backward. On the CPU both
    come from PyTorch's flash kernel; on other devices the output alone comes from
    ``scaled_dot_product_attention``, and with the log-sum-exp from plain matmul and softmax.
    ``windows_off_map``: :func:`_off_map_flags` of ``off_map`` where the caller has them.
    """
    num_windows, num_keys = off_map.shape
    batch, _, _, heads, head_dims = source.shape
    window_area = q.shape[1]
    bias = bias.to(q.dtype)
    off_map = off_map.to(q.dtype)
    bias_columns = _as_bias_columns(bias_columns)
    index_by_window = index.view(num_windows, num_keys)
    on_cpu = _uses_cpu_kernels(q.device)
    bytes_per_window = num_keys * (2 * heads * head_dims + heads * window_area) * q.element_size()
    out = q.new_empty(q.shape)
    # At least float32 whatever q is: rounded to bf16 (8 bits), a log-sum-exp near 10 is off by up
    # to 0.03, and the backward's recomputed probabilities exp(s - lse) by 3%.
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    lse = q.new_empty(batch * num_windows, heads, window_area, dtype=lse_dtype) if need_lse else None
    chunks = _bias_chunks(num_windows, bytes_per_window, q.device, bias_columns)
    windows_off_map = _off_map_flags(off_map, on_cpu, windows_off_map)
    # Chunks outside, images inside: a chunk's bias (gathered per window for Focal-fast) serves
    # every image of the batch.
    for chunk in chunks:
        windows = chunk.windows
        chunk_index = _take(index_by_window, windows).reshape(-1)
        mask = _chunk_bias(bias, bias_columns, chunk).transpose(0, 1)
        # Interior windows have no off-map keys: the shared bias broadcasts, nothing to build.
        if not on_cpu or _has_off_map_keys(chunk, windows_off_map):
            mask = mask + _take(off_map, windows)[:, None, None, :]
        for b in range(batch):
            kv = source[b].index_select(0, chunk_index)
            kv = kv.view(-1, num_keys, 2, heads, head_dims)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            q_chunk = _take(q, windows, offset=b * num_windows).transpose(1, 2)
            if on_cpu:
                out_chunk, lse_chunk = getattr(torch.ops.aten, CPU_FLASH_KERNEL)(
                    q_chunk, k, v, 0.0, False, attn_mask=mask, scale=1.0)
            elif not need_lse:
                out_chunk = F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=mask, scale=1.0)
                lse_chunk = None
            else:  # no public fused kernel returns the log-sum-exp with an additive bias on every GPU
                out_chunk, lse_chunk = _attend_with_lse(q_chunk, k, v, mask)
            _put(out, windows, out_chunk.transpose(1, 2), offset=b * num_windows)
            if need_lse:
                _put(lse, windows, lse_chunk, offset=b * num_windows)
    return out, lse


def _attend_with_lse(q, k, v, mask) -> Tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T + mask) v and the log-sum-exp (at least float32) of each query, from (..., queries, d)
    q, (..., keys, d) k and v and a mask broadcasting to (..., queries, keys).

    Scores in float32 (float64 for float64 inputs) whatever the inputs, as fused kernels keep
    them and as the backward recomputes them: under bf16 autocast a score near 16 rounds by up to
    0.06, and probabilities from rounded scores would not be the ones the backward differentiates.
    The probabilities go to the values' dtype for the last product, as in the fused kernels.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = q.to(dtype) @ k.to(dtype).transpose(-2, -1) + mask.to(dtype)
        lse = scores.logsumexp(-1)
        return (scores - lse.unsqueeze(-1)).exp_().to(v.dtype) @ v, lse


def _compiled_kernels_reason(q, source, bias, bias_columns) -> Optional[str]:
    """Why mmfocal's compiled CPU kernels do not take this attention, or None when they do
    (building them on the first call that gets this far)."""
    if q.device.type != 'cpu':
        return f'they run on CPU tensors, got a {q.device.type} tensor'
    if bias_columns is not None or bias.dim() != 3:
        return "they take one bias shared by every window (FocalTransformer's), not a bias per window"
    if q.dtype != torch.float32 or source.dtype != torch.float32 or bias.dtype != torch.float32:
        return f'they compute in float32, got q {q.dtype}, keys {source.dtype}, bias {bias.dtype}'
    if q.shape[-1] != compiled_kernels.HEAD_DIMS or q.shape[1] > compiled_kernels.MAX_QUERIES:
        return (f'they take head dims {compiled_kernels.HEAD_DIMS} and at most {compiled_kernels.MAX_QUERIES} '
                f'queries a window, got {q.shape[-1]} and {q.shape[1]}')
    return compiled_kernels.unavailable_reason()


def _takes_compiled_kernels(q, source, bias, bias_columns) -> bool:
    """Whether the fused paths run on mmfocal's compiled kernels: by default where they apply;
    forced (``attention_path(kernels='compiled')``), or an error saying why they cannot."""
    kernels = _settings.kernels
    if kernels not in (None, 'compiled') or (kernels is None and q.device.type != 'cpu'):
        return False
    reason = _compiled_kernels_reason(q, source, bias, bias_columns)
    if reason is not None and kernels == 'compiled':
        raise ValueError(f"attention_path(kernels='compiled'): the compiled kernels cannot take this attention: "
                         f'{reason}')
    return reason is None


def _compiled_inputs(q, source, index, bias, off_map) -> tuple:
    """The compiled kernels' inputs: contiguous, the bias (heads, w*w, keys) as (heads, keys,
    padded queries), zeros for the padded queries (the kernels' scores are keys-major)."""
    bias_t = F.pad(bias.transpose(1, 2), (0, compiled_kernels.padded_queries() - bias.shape[1])).contiguous()
    return q.contiguous(), source.contiguous(), index.contiguous(), bias_t, off_map.to(q.dtype).contiguous()


class _CompiledFocalAttention(torch.autograd.Function):
    """The compiled CPU kernels with autograd: as :class:`_FocalAttentionCore`, the forward keeps
    q, the key source, the output and the log-sum-exp, and the backward recomputes the attention
    from them. Arguments as :func:`_attend_fused` with a shared (heads, w*w, keys) bias."""

    @staticmethod
    def forward(ctx, q, source, index, bias, off_map):
        inputs = _compiled_inputs(q, source, index, bias, off_map)
        out, lse = compiled_kernels.forward(*inputs)
        ctx.save_for_backward(*inputs, out, lse)
        ctx.window_area = bias.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, source, index, bias_t, off_map, out, lse = ctx.saved_tensors
        # A chunk of windows' key and value gradients (keys x 2 x heads x d floats a window) is
        # gathered before it is added to the source's: as many windows as _chunk_bytes() holds.
        window_bytes = off_map.shape[1] * 2 * source.shape[3] * source.shape[4] * source.element_size()
        chunk_windows = max(torch.get_num_threads(), _chunk_bytes() // window_bytes)
        grad_q, grad_source, grad_bias_t = compiled_kernels.backward(
            q, source, index, bias_t, off_map, out, lse, grad_out.contiguous(), chunk_windows)
        return grad_q, grad_source, None, grad_bias_t[:, :, :ctx.window_area].transpose(1, 2), None


class _FocalAttentionCore(torch.autograd.Function):
    """Fused forward; the backward recomputes the attention from the saved queries and key source.

    Saves only q, the key/value source, the output and the log-sum-exp: neither the gathered keys
    and values (about 9x the map at stage 1) nor the attention matrix stay in memory between the
    passes. Gradients are the exact ones of softmax(q k^T + bias + off_map) v.
    """

    @staticmethod
    def forward(ctx, q, source, index, bias, off_map, bias_columns=None):
        # Which windows have off-map keys: found once, for the forward and the backward.
        windows_off_map = _off_map_flags(off_map, _uses_cpu_kernels(q.device))
        out, lse = _attend_fused(q, source, index, bias, off_map, bias_columns=bias_columns,
                                 windows_off_map=windows_off_map)
        ctx.save_for_backward(q, source, index, bias, off_map, out, lse)
        ctx.bias_columns = bias_columns
        ctx.windows_off_map = windows_off_map
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # The recomputation runs in float32 and writes products into float32 buffers (out=):
        # autocast, where backward() is called inside it, must not turn them into fp16/bf16.
        with torch.autocast(grad_out.device.type, enabled=False):
            return _FocalAttentionCore._recompute_gradients(ctx, grad_out)

    @staticmethod
    def _recompute_gradients(ctx, grad_out):
        q, source, index, bias, off_map, out, lse = ctx.saved_tensors
        bias_columns = _as_bias_columns(ctx.bias_columns)
        # Under autocast the inputs may be fp16/bf16: accumulate the recomputation in float32.
        dtype = torch.promote_types(q.dtype, torch.float32)
        q_dtype, source_dtype = q.dtype, source.dtype
        q, source, out, grad_out = q.to(dtype), source.to(dtype), out.to(dtype), grad_out.to(dtype)
        bias, off_map, lse = bias.to(dtype), off_map.to(dtype), lse.to(dtype)
        num_windows, num_keys = off_map.shape
        batch, _, _, heads, head_dims = source.shape
        window_area = q.shape[1]
        index_by_window = index.view(num_windows, num_keys)

        def by_head(t, windows, b):  # (B*nW, w*w, heads, d) -> (heads, windows, w*w, d) of image b
            # Rows taken before the permutation: index_select of a permuted view copies it whole.
            return _take(t, windows, offset=b * num_windows).permute(2, 0, 1, 3)

        # Keys are gathered, and their gradients added back, as whole rows of the source (2 * heads
        # * d contiguous values each: PyTorch's fast paths for index_select and index_add_, about
        # 1.4x and 1.6x faster than along a heads-outside copy), and reordered per chunk.
        source = source.contiguous()  # (B, S, 2, heads, d)
        grad_source = torch.zeros_like(source)
        grad_q = q.new_empty(batch, heads, num_windows, window_area, head_dims)
        grad_bias = torch.zeros_like(bias)
        bytes_per_window = heads * num_keys * (2 * head_dims + 2 * window_area) * q.element_size()
        on_cpu = _uses_cpu_kernels(q.device)
        # With per-window biases from a table, the images of the batch share them: sum the images'
        # score gradients, then add the sum to the table once per chunk.
        sum_over_images = bias_columns is not None and batch > 1
        windows_off_map = _off_map_flags(off_map, on_cpu, ctx.windows_off_map)
        # sum_j p_ij dP_ij = sum_c dO_ic O_ic for every query, all windows at once: (B*nW, w*w, heads)
        delta_all = torch.linalg.vecdot(grad_out, out)
        for chunk in _bias_chunks(num_windows, bytes_per_window, q.device, bias_columns):
            windows, count = chunk.windows, chunk.size
            rows = heads * count  # one small GEMM per (head, window) below
            chunk_index = _take(index_by_window, windows).reshape(-1)
            bias_and_off_map = _chunk_bias(bias, bias_columns, chunk)  # (heads, 1 or windows, w*w, keys)
            if not on_cpu or _has_off_map_keys(chunk, windows_off_map):
                bias_and_off_map = bias_and_off_map + _take(off_map, windows)[None, :, None, :]
            grad_scores_sum = None
            for b in range(batch):
                # Heads outside the windows, so every product below is one batched GEMM: (2, rows, keys, d)
                kv = source[b].index_select(0, chunk_index).view(count, num_keys, 2, heads, head_dims)
                kv = kv.permute(2, 3, 0, 1, 4).reshape(2, rows, num_keys, head_dims)
                q_chunk = by_head(q, windows, b).reshape(rows, window_area, head_dims)
                grad_by_window = by_head(grad_out, windows, b)
                grad_chunk = grad_by_window.reshape(rows, window_area, head_dims)
                delta = _take(delta_all, windows, offset=b * num_windows).permute(2, 0, 1).unsqueeze(-1)
                probs = q.new_empty(heads, count, window_area, num_keys)
                chunk_lse = _take(lse, windows, offset=b * num_windows).transpose(0, 1)  # (heads, windows, w*w)
                torch.sub(bias_and_off_map, chunk_lse[..., None], out=probs)
                probs = probs.view(rows, window_area, num_keys).baddbmm_(q_chunk, kv[0].transpose(1, 2)).exp_()
                grad_scores = torch.bmm(grad_chunk, kv[1].transpose(1, 2))
                torch.bmm(probs.transpose(1, 2), grad_chunk, out=kv[1])  # values are spent: grad_v in place
                grad_scores.view(heads, count, window_area, num_keys).sub_(delta)
                grad_scores.mul_(probs)
                del probs
                if not sum_over_images:
                    _add_bias_grad(grad_bias, grad_scores.view(heads, count, window_area, num_keys), bias_columns,
                                   chunk)
                elif grad_scores_sum is None:
                    grad_scores_sum = grad_scores.clone()
                else:
                    grad_scores_sum += grad_scores
                _put(grad_q[b], windows, torch.bmm(grad_scores, kv[0]).view(heads, count, window_area, head_dims),
                     dim=1)
                torch.bmm(grad_scores.transpose(1, 2), q_chunk, out=kv[0])  # keys are spent: grad_k in place
                del grad_scores
                grad_rows = kv.view(2, heads, count, num_keys, head_dims).permute(2, 3, 0, 1, 4)
                grad_source[b].view(-1, 2 * heads * head_dims).index_add_(
                    0, chunk_index, grad_rows.reshape(count * num_keys, 2 * heads * head_dims))
            if sum_over_images:
                _add_bias_grad(grad_bias, grad_scores_sum.view(heads, count, window_area, num_keys), bias_columns,
                               chunk)
                del grad_scores_sum
        grad_q = grad_q.permute(0, 2, 3, 1, 4)  # (B, nW, w*w, heads, d)
        return (grad_q.reshape(q.shape).to(q_dtype), grad_source.to(source_dtype), None,
                grad_bias, None, None)


class BiasColumns(NamedTuple):
    """Per-window position biases as columns of one table (Focal-fast): with it, the kernels take
    ``bias`` as a table (heads, w*w, U) and key j of window n uses column ``columns[n, j]``.

    columns: (nW, keys) long. order: None, or the (nW,) window numbers in the order the CPU
    kernels take them: first each group of windows with identical rows of ``columns``, then the
    rest. shared_groups: those groups, as (start, stop) ranges of positions in ``order``. A chunk
    inside a group takes one (heads, w*w, keys) bias broadcast over its windows, and its bias
    gradient is the sum over its windows, added to the table once.
    """
    columns: torch.Tensor
    order: Optional[torch.Tensor] = None
    shared_groups: Tuple[Tuple[int, int], ...] = ()


def _as_bias_columns(bias_columns) -> Optional[BiasColumns]:
    """None, a BiasColumns, or a plain (nW, keys) tensor of columns (no groups)."""
    if bias_columns is None or isinstance(bias_columns, BiasColumns):
        return bias_columns
    return BiasColumns(bias_columns)


class _Chunk(NamedTuple):
    """Windows the kernels process at once: ``windows``, a slice of the windows in row-major order
    or a (n,) tensor of window numbers; ``shared``: they all have the same bias columns."""
    windows: Union[slice, torch.Tensor]
    shared: bool = False

    @property
    def size(self) -> int:
        w = self.windows
        return w.stop - w.start if isinstance(w, slice) else len(w)

    @property
    def first(self) -> int:
        return self.windows.start if isinstance(self.windows, slice) else int(self.windows[0])


def _off_map_flags(off_map: torch.Tensor, on_cpu: bool, known: Optional[list] = None) -> Optional[list]:
    """For each window, whether any of its keys has a nonzero off-map logit: a Python list, so
    that the chunks ask without a tensor operation each; ``known`` where already found. None off
    the CPU kernels, which always add the off-map logits (and would wait for the device here)."""
    if not on_cpu:
        return None
    return known if known is not None else off_map.any(1).tolist()


def _has_off_map_keys(chunk: '_Chunk', windows_off_map: list) -> bool:
    """Whether a window of ``chunk`` has keys with an off-map logit (the CPU kernel then needs the
    per-window mask; elsewhere the shared bias broadcasts)."""
    windows = chunk.windows
    if isinstance(windows, slice):
        return any(windows_off_map[windows])
    return any(windows_off_map[i] for i in windows.tolist())


def _uses_cpu_kernels(device: torch.device) -> bool:
    """The CPU route: PyTorch's CPU flash kernel, over chunks of windows (see attention_path's ``kernels``)."""
    if _settings.kernels is None:
        return device.type == 'cpu' and cpu_flash_kernel_reason() is None
    if _settings.kernels == 'cpu' and device.type != 'cpu':
        raise ValueError(f"attention_path(kernels='cpu') runs on CPU tensors only, got a {device.type} tensor")
    if _settings.kernels == 'cpu' and cpu_flash_kernel_reason() is not None:
        raise ValueError(f"attention_path(kernels='cpu'): {cpu_flash_kernel_reason()}; take kernels='generic'")
    return _settings.kernels == 'cpu'


@functools.lru_cache(maxsize=None)
def cpu_flash_kernel_reason() -> Optional[str]:
    """Why this torch cannot take the ``'cpu'`` kernels, or None where it can: they need PyTorch's
    CPU flash kernel with an additive mask, ``aten::_scaled_dot_product_flash_attention_for_cpu``
    with ``attn_mask`` (torch >= 2.3; 2.2 has it without the mask, 2.1 not at all). Without it the
    CPU takes the ``'generic'`` kernels, the same function (within float rounding)."""
    op = getattr(torch.ops.aten, CPU_FLASH_KERNEL, None)
    if op is None or not any(argument.name == 'attn_mask' for argument in op.default._schema.arguments):
        return (f'torch {torch.__version__} has no CPU flash attention kernel with a mask (aten::{CPU_FLASH_KERNEL} '
                'with attn_mask, torch >= 2.3)')
    return None


def _chunk_bytes() -> int:
    return _settings.chunk_bytes or default_chunk_bytes()


def _window_chunks(num_windows: int, bytes_per_window: int, device: torch.device) -> list:
    if not _uses_cpu_kernels(device):
        return [slice(0, num_windows)]
    step = max(1, _chunk_bytes() // bytes_per_window)
    return [slice(start, min(start + step, num_windows)) for start in range(0, num_windows, step)]


def _bias_chunks(num_windows: int, bytes_per_window: int, device: torch.device,
                 bias_columns: Optional[BiasColumns]) -> list:
    """The :class:`_Chunk` s of the kernels: :func:`_window_chunks`, or with a window order (CPU
    only) chunks of at most as many windows along the order, none straddling a group's edge."""
    if bias_columns is None or bias_columns.order is None or not _uses_cpu_kernels(device):
        return [_Chunk(chunk) for chunk in _window_chunks(num_windows, bytes_per_window, device)]
    order, groups = bias_columns.order, bias_columns.shared_groups
    step = max(1, _chunk_bytes() // bytes_per_window)
    edges = sorted({0, num_windows, *(edge for group in groups for edge in group)})
    return [_Chunk(order[start:min(start + step, stop)], (begin, stop) in groups)
            for begin, stop in zip(edges, edges[1:]) for start in range(begin, stop, step)]


def _take(t: torch.Tensor, windows, dim: int = 0, offset: int = 0) -> torch.Tensor:
    """The rows of ``windows`` (shifted by ``offset``) of ``t`` along ``dim``: a view for a slice."""
    if isinstance(windows, slice):
        return t.narrow(dim, offset + windows.start, windows.stop - windows.start)
    return t.index_select(dim, windows + offset if offset else windows)


def _put(t: torch.Tensor, windows, value: torch.Tensor, dim: int = 0, offset: int = 0):
    """Write ``value`` into the rows of ``windows`` (shifted by ``offset``) of ``t`` along ``dim``."""
    if isinstance(windows, slice):
        t.narrow(dim, offset + windows.start, windows.stop - windows.start).copy_(value)
    else:
        t.index_copy_(dim, windows + offset if offset else windows, value.to(t.dtype))


def _chunk_bias(bias: torch.Tensor, bias_columns, chunk) -> torch.Tensor:
    """The position bias of the windows of ``chunk`` (a :class:`_Chunk` or a slice): (heads, 1 or
    windows, w*w, keys), a view or a gather.

    ``bias`` is one of: (heads, w*w, keys), shared by every window; (nW, heads, w*w, keys), one per
    window; or, with ``bias_columns`` (a :class:`BiasColumns` or its (nW, keys) columns), a table
    (heads, w*w, U) whose column ``columns[n, j]`` holds key j of window n. From a table, a
    shared chunk (all its windows have the same columns) gets one bias for all its windows;
    otherwise one gather along the table's last dimension, which leaves the keys contiguous as
    the CPU flash kernel wants its mask (a mask with strided keys costs it a copy).
    """
    if not isinstance(chunk, _Chunk):
        chunk = _Chunk(chunk)
    if bias_columns is not None:
        columns = _as_bias_columns(bias_columns).columns
        heads, area, num_columns = bias.shape
        chunk_columns = columns[chunk.first:chunk.first + 1] if chunk.shared else _take(columns, chunk.windows)
        # Along the last dimension of a 2-d view: index_select of a 3-d tensor along its last
        # dimension takes several times longer.
        gathered = bias.reshape(heads * area, num_columns).index_select(1, chunk_columns.reshape(-1))
        return gathered.view(heads, area, *chunk_columns.shape).transpose(1, 2)
    if bias.dim() == 4:
        return _take(bias, chunk.windows).transpose(0, 1)
    return bias.unsqueeze(1)


def _add_bias_grad(grad_bias: torch.Tensor, grad_scores: torch.Tensor, bias_columns, chunk):
    """Accumulate ``grad_scores`` (heads, windows, w*w, keys) of ``chunk`` (a :class:`_Chunk` or a
    slice) into ``grad_bias`` (shaped as the bias)."""
    if not isinstance(chunk, _Chunk):
        chunk = _Chunk(chunk)
    if bias_columns is not None:
        columns = _as_bias_columns(bias_columns).columns
        heads, windows, area, keys = grad_scores.shape
        if chunk.shared:  # one bias for every window of the chunk: sum first, then add to the table once
            summed = grad_scores.sum(1).view(heads * area, keys)
            grad_bias.view(heads * area, -1).index_add_(1, columns[chunk.first], summed)
            return
        grad_bias.view(heads * area, -1).index_add_(1, _take(columns, chunk.windows).reshape(-1),
                                                    grad_scores.transpose(1, 2).reshape(heads * area, windows * keys))
    elif grad_bias.dim() == 4:
        if isinstance(chunk.windows, slice):
            grad_bias[chunk.windows] += grad_scores.transpose(0, 1)
        else:
            grad_bias.index_add_(0, chunk.windows, grad_scores.transpose(0, 1))
    else:
        grad_bias += grad_scores.sum(1)
