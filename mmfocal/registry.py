"""OpenMMLab registration: the top layer. Importing it puts the project's modules into the MODELS
registries of mmdet and mmseg, and its hooks into the HOOKS registries of mmengine, mmdet and
mmseg, so configs reach them with
``custom_imports=dict(imports=['mmfocal'], allow_failed_imports=False)``."""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS

from .engine.exact_resume import ExactResumeHook
from .models.backbones import FocalTransformer

BACKBONES = (FocalTransformer, )

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    for _module in BACKBONES:
        if _registry.get(_module.__name__) is not _module:
            _registry.register_module(module=_module, force=True)

HOOKS = (ExactResumeHook, )

for _registry in (MMENGINE_HOOKS, MMDET_HOOKS, MMSEG_HOOKS):
    for _module in HOOKS:
        if _registry.get(_module.__name__) is not _module:
            _registry.register_module(module=_module, force=True)
