"""The authors' published ImageNet checkpoints, which the det/seg configs name by their dead URLs,
and where the same weights survive (docs/weights.md says how each copy was checked).

The authors' links (``https://projects4jw.blob.core.windows.net/model/focal-transformer/...``)
answer ``PublicAccessNotPermitted`` (docs/weights.md). :func:`dead_url_advice` tells a tool, before
anything is built, whether such a link can still be used (its file is already in the download
cache, where :func:`mmfocal.engine.safe_load.load_checkpoint_url` would read it) and, if not, what
to use instead.
"""
import os.path as osp
from typing import Optional
from urllib.parse import urlparse

from .safe_load import cached_checkpoint_path

__all__ = ['DEAD_URL_PREFIX', 'PADDLEVIT_FILES', 'OTHER_COPIES', 'is_dead_url', 'surviving_copy',
           'dead_url_advice']

DEAD_URL_PREFIX = 'https://projects4jw.blob.core.windows.net/model/focal-transformer/'

# Official file name -> the PaddleViT port of the same weights (BR-IDL/PaddleViT,
# image_classification/Focal_Transformer/README.md: its "Models Zoo" links, file names as its
# configs/ name them).
PADDLEVIT_FILES = {
    'focal-tiny-is224-ws7.pth': 'focal_tiny_patch4_window7_224.pdparams',
    'focal-tiny-useconv-is224-ws7.pth': 'focal_tiny_useconv_patch4_window7_224.pdparams',
    'focal-small-is224-ws7.pth': 'focal_small_patch4_window7_224.pdparams',
    'focal-small-useconv-is224-ws7.pth': 'focal_small_useconv_patch4_window7_224.pdparams',
    'focal-base-is224-ws7.pth': 'focal_base_patch4_window7_224.pdparams',
    'focal-base-useconv-is224-ws7.pth': 'focal_base_useconv_patch4_window7_224.pdparams',
}

# Official files that PaddleViT did not port but that survive elsewhere, as the authors' .pth.
OTHER_COPIES = {
    'focalv2-small-useconv-is224-ws7.pth':
        "Ascend's model zoo (Ascend/ModelZoo-PyTorch, ACL_PyTorch/contrib/cv/classfication/FocalTransformer)",
}


def is_dead_url(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is one of the authors' download links, which no longer answer.

    Args:
        checkpoint (str): The checkpoint a config names (a path or URL).

    Returns:
        bool: True if it starts with :data:`DEAD_URL_PREFIX`.
    """
    return checkpoint.startswith(DEAD_URL_PREFIX)


def surviving_copy(file_name: str) -> Optional[str]:
    """Where the weights of an official checkpoint survive, in a few words.

    Args:
        file_name (str): The official file's name, e.g. ``'focal-tiny-is224-ws7.pth'``.

    Returns:
        str | None: Where the same weights are published; None if nowhere known.
    """
    if file_name in PADDLEVIT_FILES:
        return f"PaddleViT's {PADDLEVIT_FILES[file_name]} (BR-IDL/PaddleViT, image_classification/Focal_Transformer)"
    return OTHER_COPIES.get(file_name)


def dead_url_advice(url: str, key: str) -> Optional[str]:
    """What to use instead of a dead link that the download cache does not hold.

    Args:
        url (str): The checkpoint a config names.
        key (str): The config key that holds it (``model.backbone.init_cfg.checkpoint``).

    Returns:
        str | None: None when ``url`` is not a dead link or its file is already in the download
        cache; else one line naming ``key``, the file, where the same weights survive and the
        option to use.
    """
    if not is_dead_url(url):
        return None
    cached = cached_checkpoint_path(url)
    if osp.isfile(cached):
        return None
    file_name = osp.basename(urlparse(url).path)
    copy = surviving_copy(file_name)
    where = (f'the same weights are {copy}' if copy else
             'no surviving copy of these weights is known: train without them (--cfg-options '
             f'{key.rpartition(".")[0]}=None) or use your own classifier checkpoint')
    return (f'{key} = {url}: the authors\' link is dead (PublicAccessNotPermitted since 2023) and {cached} is '
            f'not in the download cache; {where}; see docs/weights.md, then give the local file with '
            f'--cfg-options {key}=PATH')
