"""OpenMMLab registration: the top layer. Importing it puts the project's modules into the
registries of mmengine, mmdet, mmseg and mmpretrain, so configs reach them with
``custom_imports=dict(imports=['mmfocal'], allow_failed_imports=False)``: the backbones into the
MODELS of mmdet, mmseg and mmpretrain (an mmpretrain ``ImageClassifier`` is the ImageNet model),
the RepPointsV2 detector parts and the mask TTA model into mmdet's (head, loss, DetMaskTTAModel
into MODELS; assigners into TASK_UTILS), the training hooks into the HOOKS of all four, the
classifier's subset accuracy into mmpretrain's METRICS, and the visualizers that write
``tools/test.py --show-dir``'s PNGs into the VISUALIZERS of mmdet and mmseg. And
:func:`register_config_scope` adds ``mmfocal`` to the packages whose configs mmengine reads by
``PACKAGE::PATH`` (:mod:`mmfocal.mim`)."""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TASK_UTILS as MMDET_TASK_UTILS
from mmdet.registry import VISUALIZERS as MMDET_VISUALIZERS
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import METRICS as MMPRETRAIN_METRICS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS
from mmseg.registry import VISUALIZERS as MMSEG_VISUALIZERS

from .engine.exact_resume import ExactResumeHook
from .evaluation import SubsetAccuracy
from .models.backbones import FocalFastTransformer, FocalTransformer
from .models.dense_heads import RepPointsV2Head
from .models.losses import SeparateFocalLoss
from .models.task_modules import CornerHeatmapAssigner, PointAssignerV2
from .models.test_time_augs import DetMaskTTAModel
from .visualization.prediction_pngs import DetPredictionPNGs, SegPredictionPNGs

# The scope of ``mmfocal::`` config paths, and the module mmengine looks the package's folder up by.
CONFIG_SCOPE, CONFIG_SCOPE_MODULE = 'mmfocal', 'mmfocal.mim'

BACKBONES = (FocalTransformer, FocalFastTransformer)
DETECTION_MODELS = (RepPointsV2Head, SeparateFocalLoss, DetMaskTTAModel)
DETECTION_TASK_UTILS = (CornerHeatmapAssigner, PointAssignerV2)
HOOKS = (ExactResumeHook, )


def register_config_scope() -> None:
    """Make mmengine accept ``mmfocal::`` config paths (idempotent).

    The table maps the scope to the name mmengine's ``get_installed_path`` looks the package up
    by: ``mmfocal.mim``, rather than the distribution ``mmfocal``. pkg_resources knows no
    distribution of that name, so mmengine takes the folder of the module Python imports, which is
    right for every kind of install; the distribution's location is site-packages, where an
    editable install (PEP 660) has no mmfocal folder, and a second copy (PYTHONPATH) is not where
    the distribution says.
    """
    MODULE2PACKAGE.setdefault(CONFIG_SCOPE, CONFIG_SCOPE_MODULE)


def _register(registry, modules) -> None:
    """Register each module under its class name (again, if a reload made a new class)."""
    for module in modules:
        if registry.get(module.__name__) is not module:
            registry.register_module(module=module, force=True)


for _registry in (MMDET_MODELS, MMSEG_MODELS, MMPRETRAIN_MODELS):
    _register(_registry, BACKBONES)
_register(MMDET_MODELS, DETECTION_MODELS)
_register(MMDET_TASK_UTILS, DETECTION_TASK_UTILS)
_register(MMDET_VISUALIZERS, (DetPredictionPNGs, ))
_register(MMSEG_VISUALIZERS, (SegPredictionPNGs, ))
_register(MMPRETRAIN_METRICS, (SubsetAccuracy, ))
for _registry in (MMENGINE_HOOKS, MMDET_HOOKS, MMSEG_HOOKS, MMPRETRAIN_HOOKS):
    _register(_registry, HOOKS)
