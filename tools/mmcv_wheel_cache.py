"""Where tools/setup_env.sh keeps the mmcv wheel it builds, keyed on the torch it was built against.

mmcv's compiled ops link against one torch's C++ ABI, but pip's own wheel cache keys a source
build on the source archive alone: after a torch upgrade it would hand back the wheel built
against the old torch, and ``import mmcv.ops`` then fails (or, worse, loads and misbehaves). So
the set-up builds the wheel itself (``pip wheel --no-cache-dir``) into a folder named after the
Python, torch (with its local build tag, e.g. ``+cu130`` or ``+cpu``), CUDA and C++ ABI that it was
built with, and installs only from the folder of the running torch.

Usage (by tools/setup_env.sh, with the venv's python):
    python tools/mmcv_wheel_cache.py dir   ROOT VERSION  # the folder for this torch (made)
    python tools/mmcv_wheel_cache.py find  ROOT VERSION  # the cached wheel's path; exit 1 if none
"""
import argparse
import glob
import os
import sys


def build_key():
    """The build environment a compiled wheel depends on, as one folder name, e.g.
    ``cp311-torch2.14.1+cu130-cuda13.0-cxx11abi1``."""
    import torch
    python = f'cp{sys.version_info.major}{sys.version_info.minor}'
    cuda = torch.version.cuda or 'none'
    abi = int(torch.compiled_with_cxx11_abi())
    return f'{python}-torch{torch.__version__}-cuda{cuda}-cxx11abi{abi}'


def wheel_dir(root, version, key=None):
    """The folder for mmcv ``version`` built against ``key`` (the running torch by default)."""
    return os.path.join(root, f'mmcv-{version}', key or build_key())


def find_wheel(root, version, key=None):
    """The cached mmcv ``version`` wheel built against ``key``, or None. Wheels built against any
    other torch live in other folders and are never returned."""
    found = sorted(glob.glob(os.path.join(wheel_dir(root, version, key), f'mmcv-{version}-*.whl')))
    return found[-1] if found else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['dir', 'find'])
    parser.add_argument('root', help='the cache root, e.g. ~/.cache/mmfocal/wheels')
    parser.add_argument('version', help="mmcv's version, e.g. 2.1.0")
    args = parser.parse_args(argv)
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
