"""OpenMMLab registration: the top layer. Importing it puts the project's modules into the MODELS
registries of mmdet and mmseg, so configs reach them with
``custom_imports=dict(imports=['mmfocal'], allow_failed_imports=False)``."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .models.backbones import FocalTransformer
from .models.test_time_augs import DetMaskTTAModel

BACKBONES = (FocalTransformer, )
DETECTION_ONLY = (DetMaskTTAModel, )

for _registry, _modules in ((MMDET_MODELS, BACKBONES + DETECTION_ONLY), (MMSEG_MODELS, BACKBONES)):
    for _module in _modules:
        if _registry.get(_module.__name__) is not _module:
            _registry.register_module(module=_module, force=True)
