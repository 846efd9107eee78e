"""OpenMMLab registration: the top layer. Importing it puts the project's modules into the MODELS
registries of mmdet and mmseg, so configs reach them with
``custom_imports=dict(imports=['mmfocal'], allow_failed_imports=False)``."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .models.backbones import FocalFastTransformer, FocalTransformer

BACKBONES = (FocalTransformer, FocalFastTransformer)

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    for _module in BACKBONES:
        if _registry.get(_module.__name__) is not _module:
            _registry.register_module(module=_module, force=True)
