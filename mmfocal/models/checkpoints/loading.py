"""Loading a checkpoint file into a backbone or a classifier, strictly, with a log of what was done with every tensor.

Files are read through mmengine's ``CheckpointLoader`` (local paths, URLs and the other schemes
it knows); ``import mmfocal`` makes it read them as data only (:mod:`mmfocal.engine.safe_load`),
PaddleViT's ``.pdparams`` ports included.
"""
import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .classifier_layout import classifier_state_dict, last_stage
from .errors import CheckpointMismatchError
from .extraction import extract_state_dict
from .position_tables import resize_position_tables as resize_tables
from .reporting import abbreviate, warn_non_finite
from .strict_matching import final_norm_for_classifier, match_classifier_state_dict, match_state_dict

__all__ = ['load_pretrained', 'load_classifier_checkpoint']


def load_pretrained(model: nn.Module, filename: str, map_location='cpu', prefix: Optional[str] = None,
                    logger='current', resize_position_tables: bool = False) -> Dict[str, List[str]]:
    """Load a checkpoint file or URL into a backbone strictly, and log what was dropped and initialised.

    The checkpoint may be an official one (either kind), one of ours, an mmpretrain classifier's
    or a detector's (with ``prefix``); see :func:`~mmfocal.models.checkpoints.extraction.extract_state_dict`
    and :func:`~mmfocal.models.checkpoints.strict_matching.match_state_dict`.

    Args:
        model (nn.Module): The backbone.
        filename (str): A local path or a URL, as mmengine's ``CheckpointLoader`` takes it.
        map_location (str | torch.device): Where the tensors are loaded. Defaults to 'cpu'.
        prefix (str, optional): The backbone's key prefix in the checkpoint (``'backbone.'``).
            Defaults to None (found out).
        logger (str | logging.Logger): Where the report goes, as for mmengine's ``print_log``.
            Defaults to 'current'.
        resize_position_tables (bool): Resize relative-position tables (and 'fc' pooling weights)
            of other window, focal-window or expand sizes to the model's, by bicubic
            interpolation (:mod:`mmfocal.models.checkpoints.position_tables`); without it they are
            shape mismatches. Defaults to False.

    Returns:
        dict[str, list[str]]: The keys ``loaded``, ``dropped``, ``initialised`` and ``resized``
        (each 'key: old shape -> new shape').

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the model; the message names the
            file and every offending key.
    """
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state = extract_state_dict(checkpoint, prefix)
        warn_non_finite(state, filename, logger)
        resized = []
        if resize_position_tables:
            state, resized = resize_tables(model, state)
        state = final_norm_for_classifier(model, state)
        report = match_state_dict(model, state)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f'{filename}: {error}') from None
    report['resized'] = resized
    own = model.state_dict()
    with torch.no_grad():
        for key in report['loaded']:
            own[key].copy_(state[key])
    buffers = [k for k in report['dropped'] if not re.match(r'^(head|norm)\.', k)]
    learned = [k for k in report['dropped'] if k not in buffers]
    print_log(f'{type(model).__name__}: loaded {len(report["loaded"])} tensors from {filename}; '
              f'not used: {abbreviate(learned)} and {len(buffers)} index buffers (recomputed); '
              f'initialised (not in the checkpoint): {abbreviate(report["initialised"])}'
              + (f'; resized position tables: {abbreviate(resized, limit=len(resized))}' if resized else ''),
              logger=logger)
    return report


def load_classifier_checkpoint(model: nn.Module, filename: str, map_location='cpu', logger='current') -> dict:
    """Load an official classifier file (converted in memory) or an mmpretrain classifier checkpoint strictly.

    Args:
        model (nn.Module): An mmpretrain ImageClassifier with a Focal backbone.
        filename (str): A local path or a URL, as mmengine's ``CheckpointLoader`` takes it.
        map_location (str | torch.device): Where the tensors are loaded. Defaults to 'cpu'.
        logger (str | logging.Logger): Where the report goes, as for mmengine's ``print_log``.
            Defaults to 'current'.

    Returns:
        dict: The keys ``loaded``, ``initialised`` and ``dropped`` (index buffers), and the
        file's ``layout`` ('official' or 'mmpretrain').

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the model; the message names the
            file and every offending key.
    """
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state, layout, dropped = classifier_state_dict(checkpoint)
        warn_non_finite(state, filename, logger)
        report = match_classifier_state_dict(model, state)
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f'{filename}: {error}') from None
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.unexpected_keys and sorted(incompatible.missing_keys) == sorted(report['initialised'])
    how = (f'an official classifier, converted: norm -> backbone.norm{last_stage(state)}, head -> head.fc, the '
           f'rest under backbone.; not used: {len(dropped)} index buffers (recomputed)' if layout == 'official'
           else 'an mmpretrain classifier checkpoint')
    print_log(f'{type(model).__name__}: loaded {len(report["loaded"])} tensors from {filename} ({how}); '
              f'initialised (not in the checkpoint): {abbreviate(report["initialised"])}', logger=logger)
    return dict(report, dropped=dropped, layout=layout)
