"""Building a model from a config, the one way export (:mod:`mmfocal.deployment.export`),
attention recording (:mod:`mmfocal.analysis.record_attention`) and FLOP counting
(:mod:`mmfocal.analysis.flops`) do it: mmdet's ``init_detector`` for this project's configs."""
import copy
import logging
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint

from .cli import check_checkpoint_file, load_config

__all__ = ['build_model_from_config']


def build_model_from_config(config: Union[str, Config], checkpoint: Optional[str] = None,
                            cfg_options: Optional[dict] = None, device: str = 'cpu', seed: int = 0) -> nn.Module:
    """The model of a detection or segmentation ``config`` (a path or a loaded Config, which is
    left unchanged), in eval mode on ``device``, with the config as ``model.cfg``.

    Its weights are ``checkpoint``'s, loaded strictly; without one, the library's own
    initialisation (``init_weights``: a detector's proposals depend on it, Sparse R-CNN's start
    as whole-image boxes), drawn with ``seed`` so that the same config gives the same model
    (the caller's random state is left as it was). No pretrained backbone weights are loaded or
    downloaded in either case. SyncBN layers become BN (they need a process group; in eval mode
    they compute the same).

    Raises :class:`~mmfocal.errors.MissingFileError` (config or checkpoint not found),
    :class:`~mmfocal.errors.BadArgumentError` (a checkpoint that is a directory, FIFO or device) and
    :class:`~mmfocal.errors.ConfigError` (a config of another library).
    """
    cfg = load_config(config, cfg_options, 'none')  # sets the default scope the registry builds in
    if checkpoint is not None:
        check_checkpoint_file(checkpoint)
    if 'backbone' in cfg.model:
        cfg.model.backbone.init_cfg = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(cfg.model)))
        if checkpoint is None:
            logger = MMLogger.get_current_instance()
            level = logger.level
            logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
            try:
                model.init_weights()
            finally:
                logger.setLevel(level)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.cfg = cfg
    return model.to(device).eval()
