"""build_model_from_config: the one way export, attention recording and FLOP counting build a
model from a config; and the errors library functions raise instead of exiting."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmfocal.analysis.record_attention import attention_layer
from mmfocal.apis import build_model_from_config
from mmfocal.cli import exit_on_error
from mmfocal.errors import BadArgumentError, ConfigError, MissingFileError
from mmfocal.models.backbones import FocalTransformer

from .helpers import DET_CONFIGS, TINY, shrink_backbone


@pytest.fixture(scope='module')
def tiny_retinanet():
    return shrink_backbone(Config.fromfile(osp.join(DET_CONFIGS, 'retinanet_focal_t_1x.py')))


def test_random_weights_are_seeded_and_leave_the_callers_config_and_rng_alone(tiny_retinanet):
    before = tiny_retinanet.pretty_text
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first, second = build_model_from_config(tiny_retinanet), build_model_from_config(tiny_retinanet)
    assert torch.equal(torch.get_rng_state(), state)
    assert tiny_retinanet.pretty_text == before and first.cfg.model.type == 'RetinaNet'
    assert not first.training and next(first.parameters()).device.type == 'cpu'
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    other = build_model_from_config(tiny_retinanet, seed=1)
    assert not torch.equal(first.backbone.patch_embed.proj.weight, other.backbone.patch_embed.proj.weight)
    # mmdet's own initialisation ran: RetinaNet's classifier bias is the focal loss prior, not zero
    assert torch.allclose(first.bbox_head.retina_cls.bias, torch.tensor(-4.595), atol=1e-3)


def test_checkpoint_weights_load_strictly(tiny_retinanet, tmp_path):
    model = build_model_from_config(tiny_retinanet, seed=3)
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    loaded = build_model_from_config(tiny_retinanet, str(path))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    torch.save({'state_dict': dict(model.state_dict(), extra=torch.zeros(1)), 'meta': {}}, path)
    with pytest.raises(RuntimeError, match='unexpected key in source state_dict: extra'):
        build_model_from_config(tiny_retinanet, str(path))


def test_bad_input_raises_the_projects_errors_with_their_one_line_messages(tiny_retinanet, tmp_path):
    with pytest.raises(MissingFileError, match=f'^checkpoint not found: {tmp_path}/none.pth$') as error:
        build_model_from_config(tiny_retinanet, str(tmp_path / 'none.pth'))
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(MissingFileError, match=f'^config file not found: {tmp_path}/none.py$'):
        build_model_from_config(str(tmp_path / 'none.py'))
    with pytest.raises(ConfigError, match="default_scope is 'mmocr'") as error:
        build_model_from_config(Config(dict(default_scope='mmocr', model=dict(type='Nothing'))))
    assert isinstance(error.value, ValueError)
    backbone = FocalTransformer(**TINY)
    with pytest.raises(BadArgumentError, match=r'^--stage 4: the backbone has stages 0\.\.3$'):
        attention_layer(backbone, 4, 0)
    with pytest.raises(BadArgumentError, match=r'^--block 1: stage 0 has blocks 0\.\.0$'):
        attention_layer(backbone, 0, 1)


def test_a_tools_main_exits_with_the_message_and_lets_other_errors_through():
    @exit_on_error
    def main(error):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        main(ConfigError('the one line'))
    assert exit_info.value.code == 'the one line'
    with pytest.raises(KeyError):  # a bug is not turned into a message
        main(KeyError('bug'))
