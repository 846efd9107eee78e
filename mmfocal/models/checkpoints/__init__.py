"""Checkpoint formats of the Focal backbones and classifiers, below the models that load them.

Modules, each with one job:

* :mod:`.official_keys`: which official model a state dict is for, its sizes, what a backbone
  does not use;
* :mod:`.classifier_layout`: whole classifiers, official layout <-> mmpretrain's ImageClassifier;
* :mod:`.extraction`: a backbone's tensors out of any checkpoint that holds them;
* :mod:`.strict_matching`: a state dict checked against a model, every tensor accounted for;
* :mod:`.position_tables`: relative-position tables resized for other window sizes;
* :mod:`.paddle_layout`: PaddleViT's ``.pdparams`` arrays as the official state dict;
* :mod:`.loading`: a checkpoint file loaded strictly into a backbone or a classifier;
* :mod:`.reporting`, :mod:`.errors`: what they say, and :class:`CheckpointMismatchError`.

Reading checkpoint files safely is the runtime's job (:mod:`mmfocal.engine`).
"""
from .classifier_layout import (
    classifier_state_dict,
    classifier_to_official,
    convert_official_classifier,
    is_classifier_state_dict,
    is_official_classifier,
    official_to_classifier,
)
from .errors import CheckpointMismatchError
from .extraction import extract_state_dict
from .loading import load_classifier_checkpoint, load_pretrained
from .official_keys import (
    UNUSED_OFFICIAL_KEYS,
    backbone_class_name,
    checkpoint_kind_of,
    convert_official_state_dict,
    infer_architecture,
)
from .paddle_layout import PADDLE_NAME_TABLE, is_linear_weight, official_state_dict
from .position_tables import (
    neighbour_table_geometry,
    resize_grid_table,
    resize_neighbour_table,
    resize_pooling_weight,
    resize_position_tables,
)
from .reporting import abbreviate, warn_non_finite
from .strict_matching import RESIZE_HINT, final_norm_for_classifier, match_classifier_state_dict, match_state_dict

__all__ = [
    'CheckpointMismatchError', 'PADDLE_NAME_TABLE', 'RESIZE_HINT', 'UNUSED_OFFICIAL_KEYS', 'abbreviate',
    'backbone_class_name', 'checkpoint_kind_of', 'classifier_state_dict', 'classifier_to_official',
    'convert_official_classifier', 'convert_official_state_dict', 'extract_state_dict', 'final_norm_for_classifier',
    'infer_architecture', 'is_classifier_state_dict', 'is_linear_weight', 'is_official_classifier',
    'load_classifier_checkpoint', 'load_pretrained', 'match_classifier_state_dict', 'match_state_dict',
    'neighbour_table_geometry', 'official_state_dict', 'official_to_classifier', 'resize_grid_table',
    'resize_neighbour_table', 'resize_pooling_weight', 'resize_position_tables', 'warn_non_finite'
]
