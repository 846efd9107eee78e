"""The runtime around checkpoints: loading files as data (safe_load, data_unpickler, pdparams, with the
errors of checkpoint_files), atomic writes (atomic_checkpoint), exact resume (exact_resume) and the
published weights' locations (published_weights). The checkpoint formats (official keys, strict
matching, conversions) are :mod:`mmfocal.models.checkpoints`.

``import mmfocal`` calls :func:`install`, which changes checkpoint loading and writing for the whole
process (every mmengine Runner and loader in it, not only mmfocal's); :func:`uninstall` undoes it,
and the environment variable ``MMFOCAL_NO_PATCHES=1`` keeps ``import mmfocal`` from installing.
"""
from . import atomic_checkpoint, safe_load

__all__ = ['install', 'uninstall', 'is_installed']


def install() -> None:
    """Loading as data, mmengine's checkpoint types included (:func:`safe_load.install`), and atomic
    checkpoint writes (:func:`atomic_checkpoint.install`), for the whole process;
    idempotent."""
    safe_load.install()
    atomic_checkpoint.install()


def uninstall() -> None:
    """Put back mmengine's own checkpoint loaders and file backends, as before :func:`install`;
    idempotent. Without them, torch >= 2.6 refuses mmengine's training checkpoints (``--resume``,
    ``load_from``), and a job killed mid-save can leave a truncated file."""
    safe_load.uninstall()
    atomic_checkpoint.uninstall()


def is_installed() -> bool:
    """Whether both are in effect."""
    return safe_load.is_installed() and atomic_checkpoint.is_installed()
