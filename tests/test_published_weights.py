"""A config that names one of the authors' dead checkpoint links stops tools/train.py at once, with
one line saying where the same weights survive, unless the download cache already holds the file."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmfocal.cli import check_pretrained_checkpoint
from mmfocal.engine.published_weights import DEAD_URL_PREFIX, PADDLEVIT_FILES
from mmfocal.engine.safe_load import cached_checkpoint_path
from mmfocal.errors import MissingFileError

from .helpers import CONFIGS, DET_CONFIGS, run_tool, tool_environment

KEY = 'model.backbone.init_cfg.checkpoint'


@pytest.mark.parametrize('config, expected', [
    # Focal-fast-S survives in Ascend's zoo; Focal-fast-T nowhere known (PaddleViT's files: below).
    ('det/mask_rcnn_focal_fast_s_3x.py', "Ascend's model zoo"),
    ('seg/upernet_focal_fast_t_512x512_160k_ade20k.py', 'no surviving copy'),
])
def test_a_dead_link_says_where_the_weights_are(config, expected, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    url = cfg.model.backbone.init_cfg.checkpoint
    assert url.startswith(DEAD_URL_PREFIX)
    with pytest.raises(MissingFileError) as error:
        check_pretrained_checkpoint(cfg)
    message = str(error.value)
    assert '\n' not in message and expected in message and 'docs/weights.md' in message
    assert f'--cfg-options {KEY}=PATH' in message and cached_checkpoint_path(url) in message
    # Downloaded before the link died: the cached file is what mmfocal's URL loader reads.
    cached = tmp_path / 'hub' / 'checkpoints' / osp.basename(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b'')
    assert cached_checkpoint_path(url) == str(cached)
    check_pretrained_checkpoint(cfg)


def test_train_stops_before_building_with_a_dead_link(tmp_path):
    """tools/train.py on the README's Mask R-CNN config: one line, exit status 1, nothing built."""
    env = tool_environment(TORCH_HOME=str(tmp_path / 'torch'))
    config = osp.join(DET_CONFIGS, 'mask_rcnn_focal_t_3x.py')
    code, out = run_tool('train.py', config, cwd=str(tmp_path), check=False, env=env, timeout=600)
    assert code == 1 and 'Traceback' not in out, out
    line = out.strip().splitlines()[-1]
    for part in (KEY, f'--cfg-options {KEY}=PATH', 'docs/weights.md', PADDLEVIT_FILES['focal-tiny-is224-ws7.pth']):
        assert part in line, line
    assert not (tmp_path / 'work_dirs').exists()  # nothing was built, not even the work dir's log
