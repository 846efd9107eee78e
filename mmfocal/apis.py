"""The library's API for what the tools do: reading a config in the scope it belongs to, building
its model (the one way export, :mod:`mmfocal.deployment.export`, attention recording,
:mod:`mmfocal.analysis.record_attention`, and FLOP counting, :mod:`mmfocal.analysis.flops`, do it:
mmdet's ``init_detector`` for this project's configs), the backbone a state dict is for, and the
conversions of official and PaddleViT checkpoints that ``tools/convert_*.py`` run."""
import copy
import logging
import os
import os.path as osp
from typing import Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from .engine.atomic_checkpoint import save_checkpoint
from .engine.checkpoint_files import check_checkpoint_file
from .engine.pdparams import load_pdparams
from .errors import ConfigError, MissingFileError
from .models import backbones
from .models.checkpoints import (
    backbone_class_name,
    convert_official_classifier,
    convert_official_state_dict,
    extract_state_dict,
    infer_architecture,
    match_state_dict,
    warn_non_finite,
)

__all__ = ['SCOPES', 'load_config', 'build_model_from_config', 'match_official_backbone',
           'convert_official_checkpoint', 'convert_paddle_checkpoint']

# The default scopes of the configs the tools run: which library's registries build them.
SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def load_config(config: Union[str, Config], cfg_options: Optional[dict] = None, launcher: str = 'none') -> Config:
    """Read a config, apply overrides, and set the registry scope the config belongs to.

    Args:
        config (str | Config): A config file, or a loaded Config (copied, not changed).
        cfg_options (dict, optional): Overrides, key paths to values (``--cfg-options``).
            Defaults to None.
        launcher (str): The job launcher, stored as ``cfg.launcher``: 'none', 'pytorch',
            'slurm' or 'mpi'. Defaults to 'none'.

    Returns:
        Config: The config, its ``default_scope`` ('mmdet', 'mmseg' or 'mmpretrain') now
        mmengine's default scope.

    Raises:
        MissingFileError: The config file is not there.
        ConfigError: The config's ``default_scope`` is none of those.
    """
    if isinstance(config, Config):
        cfg, path = copy.deepcopy(config), config.filename or 'the config'
    elif not osp.isfile(config):
        raise MissingFileError(f'config file not found: {config}')
    else:
        cfg, path = Config.fromfile(config), config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ConfigError(
            f'{path}: default_scope is {scope!r}; these tools run mmdet configs '
            f"(default_scope='mmdet'), mmseg configs (default_scope='mmseg') and mmpretrain configs "
            "(default_scope='mmpretrain'). Inherit the library's default_runtime.py, as every config "
            'under configs/ does.')
    init_default_scope(scope)
    cfg.launcher = launcher
    return cfg


def build_model_from_config(config: Union[str, Config], checkpoint: Optional[str] = None,
                            cfg_options: Optional[dict] = None, device: str = 'cpu', seed: int = 0) -> nn.Module:
    """The model of a detection or segmentation config, in eval mode, with the config as ``model.cfg``.

    Its weights are the checkpoint's, loaded strictly; without one, the library's own
    initialisation (``init_weights``: a detector's proposals depend on it, Sparse R-CNN's start
    as whole-image boxes), drawn with ``seed`` so that the same config gives the same model (the
    caller's random state is left as it was). No pretrained backbone weights are loaded or
    downloaded in either case. SyncBN layers become BN (they need a process group; in eval mode
    they compute the same).

    Args:
        config (str | Config): A config file, or a loaded Config (left unchanged).
        checkpoint (str, optional): The model's weights. Defaults to None.
        cfg_options (dict, optional): Overrides of the config. Defaults to None.
        device (str): Where the model goes. Defaults to 'cpu'.
        seed (int): The seed of the initialisation without a checkpoint. Defaults to 0.

    Returns:
        nn.Module: The model.

    Raises:
        MissingFileError: The config or the checkpoint is not there.
        BadArgumentError: The checkpoint is a directory, FIFO or device.
        ConfigError: A config of another library.
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


def match_official_backbone(state: Mapping[str, torch.Tensor], source: str = 'the checkpoint') -> Tuple[str, dict,
                                                                                                        dict]:
    """The backbone an official-format state dict is for, and how the state dict fits it.

    The backbone is built from the sizes the state dict's shapes give, on the meta device (no
    memory, no initialisation), and the state dict matched against it strictly. NaN or infinite
    values are a warning naming the tensors.

    Args:
        state (Mapping[str, torch.Tensor]): A state dict with official names.
        source (str): What the warning names as its origin. Defaults to 'the checkpoint'.

    Returns:
        tuple[str, dict, dict]: The backbone's class name, its arguments, and
        :func:`~mmfocal.models.checkpoints.match_state_dict`'s report.

    Raises:
        CheckpointMismatchError: A state dict of another model; the message names the keys that
            do not fit.
    """
    arch = infer_architecture(state)
    backbone = backbone_class_name(state)
    with torch.device('meta'):
        model = getattr(backbones, backbone)(**arch)
    report = match_state_dict(model, state)
    warn_non_finite(state, source)
    return backbone, arch, report


def _as_lists(architecture: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in architecture.items()}


def convert_official_checkpoint(src: str, dst: str, classifier: bool = False) -> str:
    """Convert an official ImageNet checkpoint to a backbone-only mmfocal file or an mmpretrain classifier's.

    The backbone file holds ``state_dict`` (the backbone's tensors: classifier head, final norm and
    index buffers dropped) and ``meta`` (``source``, ``backbone``, ``architecture``); it goes into
    ``init_cfg=dict(type='Pretrained', checkpoint=dst)``. The classifier file is the whole
    ImageClassifier of configs/cls/, which ``load_checkpoint(classifier, dst, strict=True)`` takes.
    Written atomically.

    Args:
        src (str): The official file or its URL.
        dst (str): The file to write.
        classifier (bool): Write the classifier's checkpoint instead of the backbone's.
            Defaults to False.

    Returns:
        str: One line saying what was written.

    Raises:
        MMFocalError: A file that cannot be read (:mod:`mmfocal.engine.checkpoint_files`), or a
            CheckpointMismatchError for a checkpoint of another model.
    """
    checkpoint = CheckpointLoader.load_checkpoint(src, map_location='cpu')
    if classifier:
        converted, dropped = convert_official_classifier(checkpoint)
        meta = converted['meta']
        meta['source'] = os.path.basename(src)
        save_checkpoint(converted, dst)
        return (f'{dst}: {len(converted["state_dict"])} tensors of an mmpretrain ImageClassifier ({meta["backbone"]} '
                f'{meta["architecture"]}, {meta["num_classes"]} classes); dropped {len(dropped)} index buffers')
    state = extract_state_dict(checkpoint)
    backbone, arch, report = match_official_backbone(state)
    kept, _ = convert_official_state_dict(state)
    save_checkpoint(dict(state_dict=kept, meta=dict(source=os.path.basename(src), backbone=backbone,
                                                    architecture=_as_lists(arch))), dst)
    return (f'{dst}: {len(kept)} {backbone} tensors ({arch}); dropped {len(report["dropped"])} '
            f'(classifier head, final norm, index buffers); the model will initialise '
            f'{len(report["initialised"])}: {", ".join(report["initialised"]) or "none"}')


def convert_paddle_checkpoint(src: str, dst: str) -> str:
    """Convert a PaddleViT ``.pdparams`` checkpoint to an official-format ``.pth`` file.

    The file written holds what the authors' own checkpoint held, ``{'model': state_dict}`` with
    the official parameter names (classifier head, final norm and index buffers included). The
    ``.pdparams`` file is read as data only (:mod:`mmfocal.engine.pdparams`); a file of another
    model is an error naming the keys that do not fit, before anything is written.

    Args:
        src (str): The ``.pdparams`` file (read as one whatever its name).
        dst (str): The ``.pth`` file to write.

    Returns:
        str: One line saying what was written.

    Raises:
        MMFocalError: A file that cannot be read, or a CheckpointMismatchError for a checkpoint
            of another model.
    """
    checkpoint = load_pdparams(src)
    state = checkpoint['model']
    backbone, arch, _ = match_official_backbone(state)
    save_checkpoint(checkpoint, dst)
    return (f'{dst}: {len(state)} tensors of the official {backbone} classifier ({arch}) in the official '
            f'format; Linear weights transposed to [out, in]; the .pdparams name table '
            f'(StructuredToParameterName@@) left out')
