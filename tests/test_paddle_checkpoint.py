"""PaddleViT's .pdparams ports of the official checkpoints: read as data, converted to the official
format, the official logits from mini_cls.pdparams (written by paddlepaddle from PaddleViT's own
model); files carrying code or of another model refused."""
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from mmfocal import FocalFastTransformer, FocalTransformer
from mmfocal.engine.checkpoint_files import IncompleteCheckpointError, UnsafeCheckpointError
from mmfocal.engine.pdparams import load_pdparams
from mmfocal.models.checkpoints import PADDLE_NAME_TABLE, CheckpointMismatchError, is_linear_weight, load_pretrained

from .helpers import PAYLOADS, run_tool, tool_environment
from .reference_data import (
    load_reference,
    official_checkpoint_entries,
    official_classifier_logits,
    official_kwargs,
    write_reference_file,
)


@pytest.fixture(scope='module')
def mini_cls():
    """mini_cls.pt: the official classifier's args, weights (official keys, float16), input and logits."""
    return load_reference('mini_cls')


@pytest.fixture
def pdparams(tmp_path):
    return write_reference_file('mini_cls.pdparams', tmp_path)


def mini_backbone(mini_cls, **kwargs):
    return FocalTransformer(**official_kwargs(mini_cls['official_args']), **kwargs).eval()


def paddle_layout(state):
    """What paddle.save writes for an official state dict: numpy arrays, Linear weights [in, out]."""
    return {k: (v.t() if is_linear_weight(k, v) else v).numpy() for k, v in state.items()}


def write_pickle(path, content, protocol=4):
    with open(path, 'wb') as file:
        pickle.dump(content, file, protocol=protocol)
    return str(path)


# ---------------------------------------------------------------- the reference file

def test_pdparams_converts_to_the_official_state_dict(pdparams, mini_cls):
    state = CheckpointLoader.load_checkpoint(pdparams)['model']
    official = mini_cls['state_dict']
    # Every official weight, equal (the file holds mini_cls.pt's float16 weights as float32), in
    # PyTorch's layout; besides them only the index buffers the official model registers.
    for key, value in official.items():
        assert state[key].dtype == torch.float32 and torch.equal(state[key], value.float()), key
    extra = set(state) - set(official)
    assert extra and all(k.rsplit('.', 1)[-1] in ('relative_position_index', 'relative_position_index_0',
                                                  'valid_ind_rolled') for k in extra), extra
    assert PADDLE_NAME_TABLE not in state


def test_pdparams_gives_the_official_logits(pdparams, mini_cls):
    model = mini_backbone(mini_cls, init_cfg=dict(type='Pretrained', checkpoint=pdparams))
    model.init_weights()
    state = load_pdparams(pdparams)['model']
    with torch.no_grad():
        logits = official_classifier_logits(model, state, mini_cls['input'])
    torch.testing.assert_close(logits, mini_cls['logits'], atol=1e-4, rtol=0)


def test_pdparams_backbone_equals_the_official_weights(pdparams, mini_cls):
    from_paddle = mini_backbone(mini_cls, init_cfg=dict(type='Pretrained', checkpoint=pdparams))
    from_paddle.init_weights()
    from_torch = mini_backbone(mini_cls)
    load = {k: v.float() for k, v in mini_cls['state_dict'].items() if not k.startswith(('norm.', 'head.'))}
    assert from_torch.load_state_dict(load, strict=False).unexpected_keys == []
    x = mini_cls['input']
    with torch.no_grad():
        for a, b in zip(from_paddle(x), from_torch(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_pdparams_and_its_converted_pth_load_with_the_same_report(pdparams, mini_cls, tmp_path):
    converted = str(tmp_path / 'mini_cls.pth')
    _, output = run_tool('convert_paddle_ckpt.py', pdparams, converted, cwd=tmp_path)
    assert 'StructuredToParameterName@@' in output
    saved = torch.load(converted, weights_only=True)
    assert list(saved) == ['model']
    for key, value in load_pdparams(pdparams)['model'].items():
        assert torch.equal(saved['model'][key], value), key
    reports = [load_pretrained(mini_backbone(mini_cls), path) for path in (pdparams, converted)]
    assert reports[0] == reports[1]
    assert {'head.weight', 'norm.weight', 'layers.0.blocks.0.attn.valid_ind_rolled'} <= set(reports[0]['dropped'])


# ---------------------------------------------------------------- which weights are transposed

@pytest.mark.parametrize('version', [1, 2])
def test_linear_weights_are_exactly_the_official_models_linear_layers(version):
    """The name rule against the published checkpoints' keys and our backbones' module structure:
    the weights it transposes are exactly the nn.Linear layers' (and the classifier head's)."""
    backbone_class = FocalTransformer if version == 1 else FocalFastTransformer
    for file_name, entry in official_checkpoint_entries(version).items():
        args = entry['constructor']
        with torch.device('meta'):
            backbone = backbone_class(embed_dims=args['embed_dim'], depths=args['depths'],
                                      num_heads=args['num_heads'], use_conv_embed=args['use_conv_embed'])
        linear = {f'{name}.weight' for name, m in backbone.named_modules() if isinstance(m, torch.nn.Linear)}
        keys = entry['keys']
        chosen = {k for k, spec in keys.items() if is_linear_weight(k, np.empty(spec['shape'], dtype=np.uint8))}
        assert chosen == (linear & set(keys)) | {'head.weight'}, file_name
        assert linear <= set(keys), file_name
        # Square Linear weights are there (attn.proj): shapes could not have told.
        assert any(len(set(keys[k]['shape'])) == 1 for k in chosen), file_name


# ---------------------------------------------------------------- data only

@pytest.mark.parametrize('payload', sorted(PAYLOADS))
@pytest.mark.parametrize('protocol', [2, 4])
def test_a_pdparams_carrying_code_is_refused_without_running_it(tmp_path, payload, protocol, mini_cls):
    payload_class, refused = PAYLOADS[payload]
    marker = tmp_path / 'CODE_RAN'
    content = dict(paddle_layout({k: v.float() for k, v in list(mini_cls['state_dict'].items())[:4]}))
    content['layers.0.blocks.0.norm1.weight'] = payload_class(str(marker))
    path = write_pickle(tmp_path / 'focal_tiny.pdparams', content, protocol)
    model = mini_backbone(mini_cls, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(UnsafeCheckpointError) as error_info:
        model.init_weights()
    message = str(error_info.value)
    assert path in message and refused in message and 'NOT executed' in message
    assert not marker.exists()
    # The control: opened the way paddle.load (pickle.load) does, the same file runs its code.
    subprocess.run([sys.executable, '-c', f'import pickle; pickle.load(open({path!r}, "rb"))'], check=True,
                   env=tool_environment())
    assert marker.exists()


@pytest.mark.parametrize('numpy_module', ['numpy.core.multiarray', 'numpy._core.multiarray'])
def test_arrays_pickled_by_numpy_1_and_numpy_2_load(tmp_path, numpy_module):
    arrays = OrderedDict([('patch_embed.proj.weight', np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)),
                          ('layers.0.blocks.0.mlp.fc1.weight', np.arange(6, dtype=np.float32).reshape(2, 3)),
                          (PADDLE_NAME_TABLE, {'patch_embed.proj.weight': 'conv2d_0.w_0'})])
    data = pickle.dumps(arrays, protocol=2)  # protocol 2 names globals as text lines
    for name in (b'numpy.core.multiarray\n', b'numpy._core.multiarray\n'):
        data = data.replace(name, f'{numpy_module}\n'.encode())
    assert f'{numpy_module}\n_reconstruct'.encode() in data
    path = tmp_path / 'numpy.pdparams'
    path.write_bytes(data)
    state = load_pdparams(str(path))['model']
    assert list(state) == ['patch_embed.proj.weight', 'layers.0.blocks.0.mlp.fc1.weight']
    assert torch.equal(state['patch_embed.proj.weight'], torch.arange(12.).view(3, 1, 2, 2))
    assert torch.equal(state['layers.0.blocks.0.mlp.fc1.weight'], torch.arange(6.).view(2, 3).t())


def test_a_pdparams_of_another_model_or_size_names_the_keys(pdparams, mini_cls, tmp_path):
    narrower = FocalTransformer(**dict(official_kwargs(mini_cls['official_args']), embed_dims=16),
                                init_cfg=dict(type='Pretrained', checkpoint=pdparams))
    with pytest.raises(CheckpointMismatchError, match=r'mini_cls\.pdparams[\s\S]*patch_embed\.proj\.weight: '
                       r'checkpoint \(32, 3, 4, 4\) vs model \(16, 3, 4, 4\)'):
        narrower.init_weights()
    shallower = FocalTransformer(**dict(official_kwargs(mini_cls['official_args']), depths=(1, 1, 1, 1)),
                                 init_cfg=dict(type='Pretrained', checkpoint=pdparams))
    with pytest.raises(CheckpointMismatchError, match=r'checkpoint keys the model does not have: layers\.2\.blocks\.1'):
        shallower.init_weights()
    # Another model altogether (a ViT's names) and entries that are no arrays.
    vit = write_pickle(tmp_path / 'vit.pdparams', {'blocks.0.attn.qkv.weight': np.zeros((8, 24), np.float32),
                                                   'cls_token': np.zeros((1, 1, 8), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r'vit\.pdparams[\s\S]*blocks\.0\.attn\.qkv\.weight'):
        load_pretrained(mini_backbone(mini_cls), vit)
    odd = write_pickle(tmp_path / 'odd.pdparams', {'patch_embed.proj.weight': np.zeros((2, 3, 4, 4), np.float32),
                                                   'epoch': 3, 'names': np.array(['a', 'b'])})
    with pytest.raises(CheckpointMismatchError, match=r'odd\.pdparams: .*not numeric arrays: epoch \(int\), names'):
        load_pdparams(odd)


def test_a_truncated_pdparams_is_reported_as_incomplete(pdparams, tmp_path):
    path = tmp_path / 'cut.pdparams'
    with open(pdparams, 'rb') as file:
        path.write_bytes(file.read()[:100_000])
    with pytest.raises(IncompleteCheckpointError, match='truncated or corrupt'):
        CheckpointLoader.load_checkpoint(str(path))


def test_a_pdparams_url_is_downloaded_and_read_as_data(web_server, mini_cls):
    site, url = web_server
    write_reference_file('mini_cls.pdparams', site)
    model = mini_backbone(mini_cls, init_cfg=dict(type='Pretrained', checkpoint=f'{url}/mini_cls.pdparams'))
    model.init_weights()
    expected = mini_cls['state_dict']['layers.1.blocks.0.attn.proj.weight'].float()
    assert torch.equal(model.layers[1].blocks[0].attn.proj.weight.detach(), expected)
