"""Where tools/setup_env.sh keeps the mmcv wheel it builds, keyed on the torch it was built against
and on the compiled ops it holds.

mmcv's compiled ops link against one torch's C++ ABI, but pip's own wheel cache keys a source
build on the source archive alone: after a torch upgrade it would hand back the wheel built
against the old torch, and ``import mmcv.ops`` then fails (or, worse, loads and misbehaves). So
the set-up builds the wheel itself (``pip wheel --no-cache-dir``) into a folder named after the
Python, torch (with its local build tag, e.g. ``+cu130`` or ``+cpu``), CUDA and C++ ABI that it was
built with, and after the ops the build compiles: mmcv's setup.py builds CUDA ops where torch sees
a GPU or ``FORCE_CUDA=1`` is set, for the architectures of ``TORCH_CUDA_ARCH_LIST`` (else of the
GPUs it sees), and CPU ops alone otherwise. A CPU-only wheel built on a login node without a GPU
is therefore never picked up on a GPU node, nor a wheel built for other GPU architectures.

Folders made before the ops were part of the key (``...-cxx11abi1``, no ops part) still serve:
a wheel there whose ops have no CUDA code is found for the ``-cpuops`` key, in place; one with
CUDA code never is (its architectures are unknown), and the set-up builds a new one.

Usage (by tools/setup_env.sh, with the environment's python):
    python tools/mmcv_wheel_cache.py dir   ROOT VERSION  # the folder for this torch and these ops (made)
    python tools/mmcv_wheel_cache.py find  ROOT VERSION  # the cached wheel's path; exit 1 if none
    python tools/mmcv_wheel_cache.py ops                 # what the build will compile: cpuops, cudaops<archs>
    python tools/mmcv_wheel_cache.py cuda-check          # one line to say, exit 1, where CUDA ops cannot be built
    python tools/mmcv_wheel_cache.py installed VERSION   # exit 0 if the installed mmcv stays (with a line to say)
    python tools/mmcv_wheel_cache.py mark                # record build_key() in the installed mmcv
    python tools/mmcv_wheel_cache.py note                # the line for CPU-only ops beside a CUDA torch

An mmcv the set-up installed carries the key it was built for (``mmcv/.mmfocal_built_for``) and
stays while that key is the running one. One it did not install (OpenMMLab's wheel for your torch
and CUDA, ``mim install mmcv==2.1.0``, or your own build) stays where its ops load and run against
the running torch and have CUDA kernels wherever CUDA ops are wanted (a GPU seen, or FORCE_CUDA=1).
"""
import argparse
import glob
import os
import sys
import zipfile
from typing import Optional

MARKER = '.mmfocal_built_for'
CPU_OPS = 'cpuops'
CUDA_OPS = 'cudaops'
# What a CUDA build of mmcv's ops links (torch's CUDAExtension); a CPU build links none of them.
CUDA_LIBRARIES = (b'libc10_cuda.so', b'libtorch_cuda.so', b'libcudart')


def compiled_ops(environ=None) -> str:
    """The ops a build of mmcv's wheel compiles here: ``cpuops``, or ``cudaops`` followed by the
    GPU architectures, e.g. ``cudaops8.0_9.0+PTX``: ``TORCH_CUDA_ARCH_LIST``'s (sorted, ``_``
    between them), else those of the GPUs torch sees, as torch's extension builder takes them.
    mmcv's setup.py builds CUDA ops where torch sees a GPU or ``FORCE_CUDA=1`` is set."""
    import torch
    environ = os.environ if environ is None else environ
    if not (torch.cuda.is_available() or environ.get('FORCE_CUDA', '0') == '1'):
        return CPU_OPS
    arch_list = environ.get('TORCH_CUDA_ARCH_LIST', '').replace(';', ' ').split()
    if not arch_list:
        arch_list = ['{}.{}'.format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    return CUDA_OPS + '_'.join(sorted(set(arch_list)))


def cuda_problem(environ=None) -> Optional[str]:
    """Why mmcv's CUDA ops cannot be built here as asked (``FORCE_CUDA=1``), in one line, or None."""
    import torch
    environ = os.environ if environ is None else environ
    if environ.get('FORCE_CUDA', '0') != '1':
        return None
    if torch.version.cuda is None:
        return f'FORCE_CUDA=1, but torch {torch.__version__} is not a CUDA build: install the torch for your CUDA first'
    if not torch.cuda.is_available() and not environ.get('TORCH_CUDA_ARCH_LIST', '').strip():
        return ('FORCE_CUDA=1 without a GPU here: set TORCH_CUDA_ARCH_LIST to the architectures of the GPUs that '
                "will run it (e.g. TORCH_CUDA_ARCH_LIST='8.0;9.0' for A100 and H100)")
    return None


def build_key(environ=None) -> str:
    """The build environment a compiled wheel depends on, as one folder name, e.g.
    ``cp311-torch2.14.1+cu130-cuda13.0-cxx11abi1-cpuops``."""
    return f'{torch_key()}-{compiled_ops(environ)}'


def torch_key() -> str:
    """The Python, torch, CUDA and C++ ABI part of :func:`build_key` (the whole key before the ops
    were part of it)."""
    import torch
    python = f'cp{sys.version_info.major}{sys.version_info.minor}'
    cuda = torch.version.cuda or 'none'
    abi = int(torch.compiled_with_cxx11_abi())
    return f'{python}-torch{torch.__version__}-cuda{cuda}-cxx11abi{abi}'


def wheel_dir(root, version, key=None):
    """The folder for mmcv ``version`` built against ``key`` (the running torch by default)."""
    return os.path.join(root, f'mmcv-{version}', key or build_key())


def has_cuda_ops(wheel: str) -> bool:
    """Whether the compiled ops in ``wheel`` (an mmcv wheel file) link CUDA's libraries."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith('mmcv/_ext') and name.endswith('.so'):
                with archive.open(name) as library:
                    content = library.read()
                return any(cuda in content for cuda in CUDA_LIBRARIES)
    return False


def _wheels(folder, version):
    return sorted(glob.glob(os.path.join(folder, f'mmcv-{version}-*.whl')))


def find_wheel(root, version, key=None):
    """The cached mmcv ``version`` wheel built against ``key``, or None. Wheels built against any
    other torch, or with other ops, live in other folders and are never returned. For a CPU-ops
    key, the folder of its torch from before the ops were keyed serves too, for its wheels without
    CUDA code; they stay there, where the set-ups of that time still look for them."""
    key = key or build_key()
    found = _wheels(wheel_dir(root, version, key), version)
    if not found and key.endswith('-' + CPU_OPS):
        unkeyed = wheel_dir(root, version, key[:-len('-' + CPU_OPS)])
        found = [wheel for wheel in _wheels(unkeyed, version) if not has_cuda_ops(wheel)]
    return found[-1] if found else None


def cpu_ops_beside_cuda_torch_note() -> str:
    """The line the set-up prints where mmcv's ops have no CUDA kernels but torch is a CUDA build."""
    return ("note: mmcv's ops are built for the CPU only (no GPU seen, FORCE_CUDA unset) beside a CUDA torch: on "
            'GPUs its CUDA ops (RoIAlign, NMS, ...) are missing; set FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=... '
            '(docs/install.md)')


def installed_mmcv_stays(version, environ=None) -> Optional[str]:
    """Whether the installed mmcv serves as it is: None where the set-up must install one, else
    what to say about keeping it ('' for one it installed; for another, what it keeps, in words,
    with :func:`cpu_ops_beside_cuda_torch_note` where that applies)."""
    import torch
    try:
        import mmcv
        import mmcv.ops
        if mmcv.__version__ != version:
            return None
        _, keep = mmcv.ops.nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]), torch.tensor([0.9, 0.8]), 0.5)
    except Exception:  # not installed, or its ops do not load or run against this torch
        return None
    if keep.tolist() != [0]:
        return None
    built_for = os.path.join(os.path.dirname(mmcv.__file__), MARKER)
    if os.path.exists(built_for):  # installed by the set-up: for this torch and these ops only, silently
        with open(built_for) as file:
            return '' if file.read().strip() == build_key(environ) else None
    cuda = mmcv.ops.get_compiling_cuda_version()
    if cuda == 'not available' and compiled_ops(environ) != CPU_OPS:
        return None  # CUDA ops are wanted here: build them
    kept = f'keeping the installed mmcv {version} (not installed by this set-up; its ops run against torch ' \
        f'{torch.__version__}, ' + ('for the CPU only)' if cuda == 'not available' else f'with CUDA {cuda} kernels)')
    if cuda == 'not available' and torch.version.cuda is not None:
        kept += '\n' + cpu_ops_beside_cuda_torch_note()
    return kept


def mark_installed_mmcv():
    """Record :func:`build_key` in the installed mmcv (just installed from this key's wheel)."""
    import mmcv
    with open(os.path.join(os.path.dirname(mmcv.__file__), MARKER), 'w') as file:
        file.write(build_key())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['dir', 'find', 'ops', 'cuda-check', 'installed', 'mark', 'note'])
    parser.add_argument('root', nargs='?', help='the cache root, e.g. ~/.cache/mmfocal/wheels')
    parser.add_argument('version', nargs='?', help="mmcv's version, e.g. 2.1.0")
    args = parser.parse_args(argv)
    if args.command == 'ops':
        print(compiled_ops())
        return 0
    if args.command == 'note':
        print(cpu_ops_beside_cuda_torch_note())
        return 0
    if args.command == 'mark':
        mark_installed_mmcv()
        return 0
    if args.command == 'installed':  # installed VERSION: the one argument is the version
        kept = installed_mmcv_stays(args.root)
        if kept is None:
            return 1
        if kept:
            print(kept)
        return 0
    if args.command == 'cuda-check':
        problem = cuda_problem()
        if problem:
            print(problem, file=sys.stderr)
        return int(problem is not None)
    if args.root is None or args.version is None:
        parser.error(f'{args.command} takes ROOT and VERSION')
    if args.command == 'dir':
        path = wheel_dir(args.root, args.version)
        os.makedirs(path, exist_ok=True)
        print(path)
        return 0
    wheel = find_wheel(args.root, args.version)
    if wheel is None:
        return 1
    print(wheel)
    return 0


if __name__ == '__main__':
    sys.exit(main())
