"""mmfocal's own CPU kernels for the focal attention (``csrc/focal_attention_cpu.cpp``): building,
loading, and what they support.

They compute the attention of FocalTransformer's blocks (head dims 32, window 7, a bias shared by
every window, float32) on x86-64 Linux with AVX2 or AVX-512. :func:`not_supported_reasons` says
why they cannot take given inputs; :func:`unavailable_reason` builds them on its first call, with
``torch.utils.cpp_extension`` into torch's extensions folder (once per machine, torch version and
vector width), and registers the ops ``torch.ops.mmfocal_cpu.*``. Build them ahead of use with::

    python -m mmfocal.models.layers.compiled_kernels --build

(``make env`` and ``tools/dist_train.sh`` do). Where they cannot be built, or
``MMFOCAL_COMPILED_KERNELS=0`` is set, the attention takes PyTorch's kernels, with one warning
saying why when a build failed. Details: docs/attention_kernels.md.
"""
import functools
import os
import platform
import re
import shutil
import sys
import warnings
from typing import List, Optional

import torch

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'csrc', 'focal_attention_cpu.cpp')
# The kernels' fixed sizes (see the source): head dims, and queries a window (window 7).
HEAD_DIMS = 32
MAX_QUERIES = 56
SWITCH = 'MMFOCAL_COMPILED_KERNELS'
# PyTorch >= 2.14's headers need C++20; at::parallel_for is an OpenMP pragma in a header (it runs
# serially without -fopenmp; the extension then shares the libgomp that torch loaded).
BUILD_FLAGS = ('-O3', '-std=c++20', '-fopenmp')
# Per build: the instructions, and the macros under which PyTorch's vector headers (the source's
# exp) compile the code of that width; the flags PyTorch's own AVX-512 kernels are built with.
VECTOR_FLAGS = {
    'AVX512': ('-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx2', '-mfma', '-DCPU_CAPABILITY=AVX512',
               '-DCPU_CAPABILITY_AVX512'),
    'AVX2': ('-mavx2', '-mfma', '-DCPU_CAPABILITY=AVX2', '-DCPU_CAPABILITY_AVX2'),
}


def not_supported_reasons(q: torch.Tensor, source: torch.Tensor, bias: torch.Tensor,
                          bias_columns=None) -> List[str]:
    """Why the compiled kernels cannot take an attention call (empty where they can).

    Builds the kernels (on the first call) only where the inputs fit them.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, d).
        source (torch.Tensor): Key source, (B, S, 2, heads, d).
        bias (torch.Tensor): Position bias; the kernels take (heads, w*w, keys), shared by every window.
        bias_columns (optional): Per-window bias columns (Focal-fast); the kernels take none.
            Defaults to None.

    Returns:
        list[str]: The reasons, each a phrase that follows "the compiled kernels cannot run: ".
    """
    reasons = []
    if q.device.type != 'cpu':
        reasons.append(f'they run on CPU tensors, got a {q.device.type} tensor')
    if bias_columns is not None or bias.dim() != 3:
        reasons.append("they take one bias shared by every window (FocalTransformer's), not a bias per window")
    if q.dtype != torch.float32 or source.dtype != torch.float32 or bias.dtype != torch.float32:
        reasons.append(f'they compute in float32, got q {q.dtype}, keys {source.dtype}, bias {bias.dtype}')
    if q.shape[-1] != HEAD_DIMS or q.shape[1] > MAX_QUERIES:
        reasons.append(f'they take head dims {HEAD_DIMS} and at most {MAX_QUERIES} queries a window, got '
                       f'{q.shape[-1]} and {q.shape[1]}')
    if not reasons:
        unavailable = unavailable_reason()
        if unavailable is not None:
            reasons.append(unavailable)
    return reasons


def unavailable_reason() -> Optional[str]:
    """Why the compiled kernels are not used on this machine, or None when they are.

    Builds them on the first call (unless ``MMFOCAL_COMPILED_KERNELS=0`` is set).

    Returns:
        str | None: The reason, or None.
    """
    if os.environ.get(SWITCH, '1') == '0':
        return f'{SWITCH}=0 is set'
    return _build()


def extension_name() -> str:
    """The name of this machine's build: one per torch version and vector width (the extension
    links against this torch's libraries, and an AVX-512 build would not run where PyTorch is told
    to use AVX2 only)."""
    return f'mmfocal_cpu_kernels_{vector_build().lower()}_' + re.sub(r'\W', '_', torch.__version__)


def build_directory() -> str:
    """Where torch's extensions folder keeps this machine's build (``TORCH_EXTENSIONS_DIR`` if set)."""
    from torch.utils.cpp_extension import _get_build_directory
    return _get_build_directory(extension_name(), verbose=False)


@functools.lru_cache(maxsize=None)
def _build() -> Optional[str]:
    if not sys.platform.startswith('linux') or platform.machine() != 'x86_64':
        return f'they are built for x86-64 Linux, this is {platform.machine()} {sys.platform}'
    capability = vector_build()
    if capability not in VECTOR_FLAGS:
        return f'they need AVX2, and PyTorch finds {capability} here'
    try:
        from torch.utils.cpp_extension import load
        _put_ninja_on_path()
        load(extension_name(), [SOURCE], extra_cflags=[*BUILD_FLAGS, *VECTOR_FLAGS[capability]],
             extra_ldflags=['-fopenmp'], is_python_module=False)
    except Exception as error:  # a compiler, ninja or the headers missing: fall back, and say so once
        last_line = (str(error).strip().splitlines() or [''])[-1]
        reason = f'building them failed ({type(error).__name__}: {last_line})'
        warnings.warn(f'mmfocal: the compiled CPU attention kernels are not used: {reason}; the attention takes '
                      f"PyTorch's kernels (about twice the attention's time). Set {SWITCH}=0 to skip the build.")
        return reason
    return None


def vector_build() -> str:
    """The vector instructions of the build this process uses (or would use).

    Returns:
        str: PyTorch's own kernels' capability here, 'AVX512' or 'AVX2' (others are not built).
    """
    return torch.backends.cpu.get_cpu_capability()


@functools.lru_cache(maxsize=None)
def padded_queries() -> int:
    """Queries a window as the built kernels take them, padded to whole vectors (only once built).

    Returns:
        int: The last dimension of their ``bias_t``: 56 for AVX2, 64 for AVX-512.
    """
    return torch.ops.mmfocal_cpu.padded_queries()


def _put_ninja_on_path():
    """torch.utils.cpp_extension runs ``ninja`` from PATH; pip's ninja package (tools/setup_env.sh
    installs it) puts it in the environment's bin folder, which is on PATH only in an activated
    environment."""
    if shutil.which('ninja') is None:
        try:
            import ninja
        except ImportError:
            return  # the build then fails with torch's own message: "Ninja is required ..."
        os.environ['PATH'] = ninja.BIN_DIR + os.pathsep + os.environ.get('PATH', '')


def forward(q: torch.Tensor, source: torch.Tensor, index: torch.Tensor, bias_t: torch.Tensor,
            off_map: torch.Tensor):
    """The attention's forward on the compiled kernels.

    Args:
        q (torch.Tensor): Queries, (B*nW, w*w, heads, 32), contiguous float32.
        source (torch.Tensor): Keys and values, (B, S, 2, heads, 32).
        index (torch.Tensor): (nW * keys,) int64 rows of ``source``.
        bias_t (torch.Tensor): The shared bias transposed and padded, (heads, keys, :func:`padded_queries`).
        off_map (torch.Tensor): (nW, keys) logits added to every query's scores.

    Returns:
        list[torch.Tensor]: The output (B*nW, w*w, heads, 32) and log-sum-exp (B*nW, heads, w*w).
    """
    return torch.ops.mmfocal_cpu.focal_attention_forward(q, source, index, bias_t, off_map)


def backward(q, source, index, bias_t, off_map, out, lse, grad_out, chunk_windows: int):
    """The attention's backward on the compiled kernels, recomputing the probabilities.

    Args:
        q (torch.Tensor): Queries, as :func:`forward` took them.
        source (torch.Tensor): Keys and values, likewise.
        index (torch.Tensor): Rows of ``source``, likewise.
        bias_t (torch.Tensor): The transposed bias, likewise.
        off_map (torch.Tensor): Off-map logits, likewise.
        out (torch.Tensor): The output :func:`forward` returned.
        lse (torch.Tensor): The log-sum-exp :func:`forward` returned.
        grad_out (torch.Tensor): Gradient of the output, contiguous, shaped as ``out``.
        chunk_windows (int): Windows whose key and value gradients are gathered before they are
            added into the key source's.

    Returns:
        list[torch.Tensor]: Gradients of ``q``, ``source`` and ``bias_t``.
    """
    return torch.ops.mmfocal_cpu.focal_attention_backward(q, source, index, bias_t, off_map, out, lse, grad_out,
                                                         chunk_windows)
