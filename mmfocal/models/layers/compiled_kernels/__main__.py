"""Build mmfocal's compiled CPU attention kernels ahead of use::

    python -m mmfocal.models.layers.compiled_kernels --build

Builds into the folder the first use would build into (torch's extensions folder, or
``TORCH_EXTENSIONS_DIR``), so that the first training step, or every rank of a distributed run,
finds them built. Prints that folder and exits 0; where they cannot be built (no compiler, not
x86-64 Linux with AVX2), prints one line saying why and exits 1; with ``MMFOCAL_COMPILED_KERNELS=0``
set, builds nothing and exits 0. Either way the attention still runs (PyTorch's kernels).
"""
import argparse
import logging
import sys
import warnings

from . import SWITCH, build_directory, unavailable_reason, vector_build


def main(argv=None) -> int:
    """Build the compiled CPU attention kernels ahead of use (``--build``).

    Args:
        argv (list[str], optional): The command-line arguments. Defaults to None: ``sys.argv``.

    Returns:
        int: The exit status: 0 when built or switched off, 1 when they cannot be built here or
        ``--build`` is not given.
    """
    parser = argparse.ArgumentParser(prog='python -m mmfocal.models.layers.compiled_kernels',
                                     description="Build mmfocal's compiled CPU attention kernels ahead of use.")
    parser.add_argument('--build', action='store_true', help='build them (or find them built) for this machine')
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_usage(sys.stderr)
        print(f'{parser.prog}: nothing to do: pass --build', file=sys.stderr)
        return 1
    # torch's note on importing its extension builder without CUDA is no news here.
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the one line below says why, as the warning would
        reason = unavailable_reason()
    if reason == f'{SWITCH}=0 is set':
        print(f'mmfocal compiled CPU attention kernels: not built, {reason}')
        return 0
    if reason is not None:
        print(f'mmfocal compiled CPU attention kernels: not built: {reason} '
              "(the attention takes PyTorch's kernels)", file=sys.stderr)
        return 1
    print(f'mmfocal compiled CPU attention kernels ({vector_build()}) built in {build_directory()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
