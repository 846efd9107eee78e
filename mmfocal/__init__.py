"""mmfocal: the Focal Transformer backbones (FocalTransformer, FocalFastTransformer) for mmdet,
mmseg and mmpretrain, with the detection parts, checkpoint handling, deployment and analysis
they need. README.md says how to install and use it and where each part lives.

``import mmfocal`` registers everything in the registries of mmengine, mmdet, mmseg and
mmpretrain (``mmfocal.registry``), adds ``mmfocal`` to the packages whose configs mmengine reads
by ``PACKAGE::PATH`` (``mmfocal.mim``), and, for the whole process (every mmengine Runner and
checkpoint loader in it, not only mmfocal's), makes checkpoints load as data only and be written
atomically (``mmfocal.engine.install()``):

* loading: mmengine's checkpoint loaders (URLs included, which mmengine otherwise unpickles
  without restriction) read checkpoints with mmfocal's own unpickler, which builds the types that
  mmengine, mmdet, mmseg and mmpretrain training checkpoints hold and refuses everything else
  (``mmfocal.engine.safe_load``); torch's own allow-list is not changed;
* writing: mmengine's local file backend writes to a temporary file and renames it, so a job
  killed mid-save never leaves a truncated checkpoint (``mmfocal.engine.atomic_checkpoint``).

To keep torch's and mmengine's own behaviour, set the environment variable ``MMFOCAL_NO_PATCHES=1``
before importing mmfocal, or call ``mmfocal.engine.uninstall()`` afterwards (``install()`` turns
them on again). Without them, torch >= 2.6 refuses mmengine's training checkpoints (``--resume``,
``load_from``) with its own weights-only error.
"""
import os

from . import engine
from .models import ARCH_SETTINGS, FocalFastTransformer, FocalTransformer
from .registry import MMDET_MODELS, MMSEG_MODELS, register_config_scope  # noqa: F401  registers the modules
from .version import __version__

register_config_scope()  # configs elsewhere may inherit 'mmfocal::det/...' (mmfocal.mim)

__all__ = ['ARCH_SETTINGS', 'FocalFastTransformer', 'FocalTransformer', '__version__']

# Read once, here: whether importing mmfocal installs the checkpoint loading and writing.
if os.environ.get('MMFOCAL_NO_PATCHES', '0') in ('', '0'):
    engine.install()
