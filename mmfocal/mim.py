"""The configs inside the installed package, for downstream projects: ``mmfocal::`` config paths.

A config elsewhere inherits ours as it inherits mmdet's::

    _base_ = 'mmfocal::det/mask_rcnn_focal_t_3x.py'
    custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

mmengine resolves ``PACKAGE::PATH`` to ``<package>/.mim/configs/PATH``, where setup.py puts a copy
of ``configs/`` (``mmfocal/.mim/configs`` links to it in the repository), but only for the
packages in its table ``mmengine.config.utils.MODULE2PACKAGE`` (OpenMMLab's own; the registries
read the same table for their "install it" hints). :func:`register_config_scope`, called by
``import mmfocal``, adds ``mmfocal`` to it: the one change mmengine needs, made where it looks.

mmengine reads ``_base_`` before it runs a config's ``custom_imports``, so mmfocal must be
imported before the config is read: mmfocal's tools do that; mmdet's, mmseg's and mmpretrain's
own scripts run through ``python -m mmfocal.mim SCRIPT ARGS ...`` (:func:`main`), which imports
mmfocal, then runs the script unchanged.
"""
import os.path as osp
import runpy
import sys

from mmengine.config.utils import MODULE2PACKAGE

__all__ = ['SCOPE', 'register_config_scope', 'packaged_configs', 'main']

SCOPE = 'mmfocal'


def register_config_scope() -> None:
    """Make mmengine accept ``mmfocal::`` config paths (idempotent).

    The table maps the scope to the name mmengine's ``get_installed_path`` looks the package up by:
    ``mmfocal.mim``, this module, rather than the distribution ``mmfocal``. pkg_resources knows no
    distribution of that name, so mmengine takes the folder of the module Python imports, which is
    right for every kind of install; the distribution's location is site-packages, where an
    editable install (PEP 660) has no mmfocal folder, and a second copy (PYTHONPATH) is not where
    the distribution says."""
    MODULE2PACKAGE.setdefault(SCOPE, __name__)


def packaged_configs() -> str:
    """The folder ``mmfocal::`` paths are read from (``<installed mmfocal>/.mim/configs``)."""
    return osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')


def main(argv=None) -> None:
    """``python -m mmfocal.mim SCRIPT ARGS ...``: run SCRIPT (mmdet's ``tools/train.py``, say) as
    ``__main__`` with ARGS, after ``import mmfocal``, so that the configs it reads may inherit
    ``mmfocal::`` paths."""
    import mmfocal  # noqa: F401  registers the scope (and the models, hooks and checkpoint loading)

    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit('usage: python -m mmfocal.mim SCRIPT [ARGS ...]  (e.g. mmdet\'s tools/train.py)')
    script = argv[0]
    if not osp.isfile(script):
        raise SystemExit(f'script not found: {script}')
    sys.argv = list(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(script)))  # as `python SCRIPT` would
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
