"""The configs inside the installed package, for downstream projects: ``mmfocal::`` config paths.

A config elsewhere inherits ours as it inherits mmdet's::

    _base_ = 'mmfocal::det/mask_rcnn_focal_t_3x.py'
    custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

mmengine resolves ``PACKAGE::PATH`` to ``<package>/.mim/configs/PATH``, where setup.py puts a copy
of ``configs/`` (``mmfocal/.mim/configs`` links to it in the repository), but only for the
packages in its table ``mmengine.config.utils.MODULE2PACKAGE`` (OpenMMLab's own; the registries
read the same table for their "install it" hints).
:func:`mmfocal.registry.register_config_scope`, called by ``import mmfocal``, adds ``mmfocal`` to
it, naming this module: the one change mmengine needs, made where it looks.

mmengine reads ``_base_`` before it runs a config's ``custom_imports``, so mmfocal must be
imported before the config is read: mmfocal's tools do that; mmdet's, mmseg's and mmpretrain's
own scripts run through ``python -m mmfocal.mim SCRIPT ARGS ...`` (:func:`main`), which imports
mmfocal, then runs the script unchanged.
"""
import os.path as osp
import runpy
import sys

import mmfocal  # noqa: F401  registers the scope (and the models, hooks and checkpoint loading)

__all__ = ['packaged_configs', 'main']


def packaged_configs() -> str:
    """The folder ``mmfocal::`` paths are read from.

    Returns:
        str: ``<installed mmfocal>/.mim/configs``.
    """
    return osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs')


def main(argv=None) -> None:
    """``python -m mmfocal.mim SCRIPT ARGS ...``: run a script as ``__main__`` after ``import mmfocal``.

    The configs the script reads (mmdet's ``tools/train.py``, say) may then inherit ``mmfocal::``
    paths.

    Args:
        argv (list[str], optional): SCRIPT and its arguments. Defaults to None (``sys.argv[1:]``).

    Raises:
        SystemExit: Without a script, or with one that is not there (usage line, exit status 1).
    """
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
