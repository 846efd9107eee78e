"""OpenMMLab registration: the top layer. Importing it puts FocalTransformer into the MODELS
registries of mmdet and mmseg, so configs reach it with
``custom_imports=dict(imports=['mmfocal'], allow_failed_imports=False)``."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

from .focal_transformer import FocalTransformer

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    if _registry.get('FocalTransformer') is not FocalTransformer:
        _registry.register_module(module=FocalTransformer, force=True)
