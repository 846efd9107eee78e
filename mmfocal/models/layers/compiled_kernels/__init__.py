"""mmfocal's own CPU kernels for the focal attention (``csrc/focal_attention_cpu.cpp``), built on
first use.

One job: building and loading them, and saying why not where they cannot be had. They compute the
same function as the PyTorch kernels of :mod:`.attention_kernels` in about half the time on the CPU
(docs/speed.md), for the attention of FocalTransformer's blocks: head dims 32, window 7, a bias
shared by every window, float32. :func:`unavailable_reason` builds them on its first call with
``torch.utils.cpp_extension`` (a C++20 compiler and ninja; 15-30 s, once per machine and torch
version, kept under torch's extensions folder), which registers the ops ``torch.ops.mmfocal_cpu.*``.
It builds them for the vector instructions PyTorch's own kernels use here
(``torch.backends.cpu.get_cpu_capability()``): AVX-512 or AVX2 (``ATEN_CPU_CAPABILITY=avx2``
picks the AVX2 build on an AVX-512 machine, as it does PyTorch's kernels).
Where they cannot be built (no compiler, not x86-64 with AVX2, not Linux) or
``MMFOCAL_COMPILED_KERNELS=0`` is set, the attention takes PyTorch's kernels, with one warning
saying why when the build failed.
"""
import functools
import os
import platform
import re
import shutil
import sys
import warnings
from typing import Optional

import torch

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc', 'focal_attention_cpu.cpp')
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


def unavailable_reason() -> Optional[str]:
    """Why the compiled kernels are not used on this machine, or None when they are (building them
    on the first call)."""
    if os.environ.get(SWITCH, '1') == '0':
        return f'{SWITCH}=0 is set'
    return _build()


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
        # One build per torch version and vector width: the extension links against this torch's
        # libraries, and an AVX-512 build would not run where PyTorch is told to use AVX2 only.
        name = f'mmfocal_cpu_kernels_{capability.lower()}_' + re.sub(r'\W', '_', torch.__version__)
        load(name, [SOURCE], extra_cflags=[*BUILD_FLAGS, *VECTOR_FLAGS[capability]], extra_ldflags=['-fopenmp'],
             is_python_module=False)
    except Exception as error:  # a compiler, ninja or the headers missing: fall back, and say so once
        last_line = (str(error).strip().splitlines() or [''])[-1]
        reason = f'building them failed ({type(error).__name__}: {last_line})'
        warnings.warn(f'mmfocal: the compiled CPU attention kernels are not used: {reason}; the attention takes '
                      f"PyTorch's kernels (about twice the attention's time). Set {SWITCH}=0 to skip the build.")
        return reason
    return None


def vector_build() -> str:
    """The vector instructions of the build this process uses (or would use): PyTorch's own
    kernels' here, 'AVX512' or 'AVX2' (others are not built)."""
    return torch.backends.cpu.get_cpu_capability()


@functools.lru_cache(maxsize=None)
def padded_queries() -> int:
    """Queries a window as the built kernels take them, padded to whole vectors: the last
    dimension of their ``bias_t`` (56 for AVX2, 64 for AVX-512). Only once they are built."""
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
    """Output (B*nW, w*w, heads, 32) and log-sum-exp (B*nW, heads, w*w): see the source for the shapes."""
    return torch.ops.mmfocal_cpu.focal_attention_forward(q, source, index, bias_t, off_map)


def backward(q, source, index, bias_t, off_map, out, lse, grad_out, chunk_windows: int):
    """Gradients of q, the key source and ``bias_t``."""
    return torch.ops.mmfocal_cpu.focal_attention_backward(q, source, index, bias_t, off_map, out, lse, grad_out,
                                                         chunk_windows)
