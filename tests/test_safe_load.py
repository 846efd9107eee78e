"""Checkpoints load as data: ours, mmdet's, mmseg's and the official ones load; code never runs.

The malicious checkpoints here are real: unpickled without the allow-list they create a marker
file (shown by ``test_the_malicious_checkpoints_really_run_code``). Every way a checkpoint gets
into a job must refuse them with a message naming the file and the refused object, and leave no
marker behind.
"""
import inspect
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import Runner
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint

from mmfocal import FocalTransformer
from mmfocal.engine import safe_load
from mmfocal.engine.safe_load import (
    CHECKPOINT_UNPICKLER,
    CheckpointDownloadError,
    UnsafeCheckpointError,
    load_checkpoint_file,
)

from .helpers import (
    DET_DEMO_CONFIG,
    PAYLOADS,
    SEG_CONFIGS,
    TINY_BACKBONE,
    RunsShellCommand,
    free_port,
    run_tool,
    shrink_backbone,
    tool_command,
    tool_environment,
)
from .reference_data import official_checkpoint_entries

DET_CLASSES = ('circle', 'square', 'triangle', 'cross')
SEG_CLASSES = ('background', ) + DET_CLASSES


# ---------------------------------------------------------------- malicious checkpoints

def write_malicious_checkpoint(path, marker, payload='os.system'):
    """A plausible training checkpoint whose meta carries code that creates ``marker``."""
    payload_class = PAYLOADS[payload][0]
    checkpoint = dict(meta=dict(epoch=1, iter=1, note=payload_class(str(marker))),
                      state_dict=OrderedDict(weight=torch.zeros(2)))
    torch.save(checkpoint, path)  # torch.save pickles with protocol 2
    return str(path)


@pytest.fixture(params=sorted(PAYLOADS))
def malicious(request, tmp_path):
    marker = tmp_path / 'CODE_RAN'
    path = write_malicious_checkpoint(tmp_path / 'epoch_1.pth', marker, request.param)
    return path, marker, PAYLOADS[request.param][1]


@pytest.fixture
def shell_payload(tmp_path):
    """One malicious checkpoint, for the paths that are slow to run (whole tools)."""
    marker = tmp_path / 'CODE_RAN'
    return write_malicious_checkpoint(tmp_path / 'epoch_1.pth', marker), marker, 'posix.system'


def assert_refused(error_info, path, refused, marker):
    error = error_info.value
    assert isinstance(error, UnsafeCheckpointError) and isinstance(error, pickle.UnpicklingError)
    message = str(error)
    assert path in message and refused in message and 'NOT executed' in message
    assert not marker.exists()


def test_the_malicious_checkpoints_really_run_code(tmp_path):
    # The control: loaded the unsafe way, in a separate process, each payload does create its marker.
    paths = [write_malicious_checkpoint(tmp_path / f'{name}.pth', tmp_path / f'ran_{name}', name)
             for name in PAYLOADS]
    unsafe_load = f'import torch\nfor path in {paths!r}: torch.load(path, weights_only=False)'
    subprocess.run([sys.executable, '-c', unsafe_load], check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert all((tmp_path / f'ran_{name}').exists() for name in PAYLOADS)


def test_checkpoint_loader_refuses_code(malicious):
    path, marker, refused = malicious
    with pytest.raises(UnsafeCheckpointError) as error_info:
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert_refused(error_info, path, refused, marker)


@pytest.mark.parametrize('file_format', ['legacy torch', 'plain pickle'])
def test_older_file_formats_are_checked_too(tmp_path, file_format):
    marker = tmp_path / 'CODE_RAN'
    path = str(tmp_path / 'old.pth')
    checkpoint = dict(state_dict={}, meta=RunsShellCommand(str(marker)))
    if file_format == 'legacy torch':
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, 'wb') as file:
            pickle.dump(checkpoint, file, protocol=2)
    with pytest.raises(UnsafeCheckpointError) as error_info:
        CheckpointLoader.load_checkpoint(path)
    assert_refused(error_info, path, 'posix.system', marker)


def test_load_checkpoint_into_a_model_refuses_code(malicious):
    path, marker, refused = malicious
    with pytest.raises(UnsafeCheckpointError) as error_info:
        load_checkpoint(torch.nn.Linear(2, 1), path)
    assert_refused(error_info, path, refused, marker)


def test_init_cfg_pretrained_refuses_code(malicious):
    path, marker, refused = malicious
    backbone = FocalTransformer(**dict(TINY_BACKBONE, init_cfg=dict(type='Pretrained', checkpoint=path)))
    with pytest.raises(UnsafeCheckpointError) as error_info:
        backbone.init_weights()
    assert_refused(error_info, path, refused, marker)


def test_a_forced_unsafe_torch_default_does_not_reopen_the_hole(malicious, monkeypatch):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes torch.load unsafe when weights_only is not passed;
    # mmfocal's loaders pass it.
    path, marker, refused = malicious
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(UnsafeCheckpointError) as error_info:
        _load_checkpoint(path, map_location='cpu')
    assert_refused(error_info, path, refused, marker)


def test_a_getattr_reaching_beyond_history_buffer_statistics_is_refused(tmp_path):
    class ReachesForInit:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(state_dict={}, meta=dict(x=ReachesForInit())), path)
    expected = r"getattr\(<class '.*HistoryBuffer'>, '__init__'\) \(a checkpoint may fetch only HistoryBuffer stat"
    with pytest.raises(UnsafeCheckpointError, match=expected) as error_info:
        _load_checkpoint(path)
    assert path in str(error_info.value)


def test_a_truncated_checkpoint_is_reported_as_incomplete(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    torch.save(dict(state_dict=dict(weight=torch.zeros(1000))), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(safe_load.IncompleteCheckpointError, match='truncated or corrupt') as error_info:
        _load_checkpoint(str(path))
    assert str(path) in str(error_info.value)


# ---------------------------------------------------------------- checkpoints from the internet

def test_a_downloaded_checkpoint_is_refused_not_executed(web_server, tmp_path, monkeypatch):
    # mmengine alone downloads through torch.hub.load_state_dict_from_url with weights_only=False.
    site, url = web_server
    marker = tmp_path / 'CODE_RAN'
    write_malicious_checkpoint(site / 'focal-tiny.pth', marker)
    backbone = FocalTransformer(**dict(TINY_BACKBONE, init_cfg=dict(type='Pretrained',
                                                                    checkpoint=f'{url}/focal-tiny.pth')))
    with pytest.raises(UnsafeCheckpointError) as error_info:
        backbone.init_weights()
    assert_refused(error_info, f'{url}/focal-tiny.pth', 'posix.system', marker)
    # The same through the open-mmlab:// model zoo names, which mmengine resolves to a URL.
    (tmp_path / 'mmengine_home').mkdir(exist_ok=True)
    (tmp_path / 'mmengine_home' / 'open_mmlab.json').write_text(json.dumps({'focal_evil': f'{url}/zoo.pth'}))
    write_malicious_checkpoint(site / 'zoo.pth', marker)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(UnsafeCheckpointError) as error_info:
        _load_checkpoint('open-mmlab://focal_evil')
    assert_refused(error_info, f'{url}/zoo.pth', 'posix.system', marker)


def test_mmengines_own_loaders_that_call_torch_load_read_as_data_too(tmp_path, monkeypatch):
    # open-mmlab:// names a file under MMENGINE_HOME; mmengine's loader calls torch.load on it itself
    # (as its pavi:// and s3:// loaders do), which before torch 2.6 would unpickle without restriction.
    marker = tmp_path / 'CODE_RAN'
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    (home / 'open_mmlab.json').write_text(json.dumps({'focal_local': 'zoo/focal.pth'}))
    (home / 'zoo').mkdir()
    path = write_malicious_checkpoint(home / 'zoo' / 'focal.pth', marker)
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    with pytest.raises(UnsafeCheckpointError) as error_info:
        _load_checkpoint('open-mmlab://focal_local')
    assert 'posix.system' in str(error_info.value) and not marker.exists()
    message_hub_checkpoint(path)  # and a training checkpoint, numpy in its message hub, loads
    assert isinstance(_load_checkpoint('open-mmlab://focal_local')['message_hub']['log_scalars']['loss'],
                      HistoryBuffer)


def test_a_downloaded_official_checkpoint_loads(web_server):
    site, url = web_server
    backbone = FocalTransformer(**TINY_BACKBONE)
    torch.save(official_format(backbone), site / 'focal-tiny.pth')
    loaded = FocalTransformer(**dict(TINY_BACKBONE, init_cfg=dict(type='Pretrained',
                                                                  checkpoint=f'{url}/focal-tiny.pth')))
    loaded.init_weights()
    assert torch.equal(loaded.patch_embed.proj.weight, backbone.patch_embed.proj.weight)


def test_a_failed_download_names_the_url_and_how_to_use_a_local_copy(web_server):
    _, url = web_server
    with pytest.raises(CheckpointDownloadError, match=r'could not download the checkpoint .*/missing\.pth \(HTTP 404: '
                       r'.*--cfg-options model\.backbone\.init_cfg\.checkpoint=/path/to/file\.pth'):
        _load_checkpoint(f'{url}/missing.pth')


# Two ranks load a URL as mmengine's loader does under a distributed launcher (gloo, on CPU).
TWO_RANKS = textwrap.dedent('''
    import sys
    import torch.distributed as dist
    from mmfocal.cli import end_distributed
    from mmfocal.engine.safe_load import load_checkpoint_url
    rank, port, site, model_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    for name in ('missing.pth', 'focal-tiny.pth'):
        try:
            checkpoint = load_checkpoint_url(f'{site}/{name}', model_dir=model_dir)
            print(f'{name}: loaded {len(checkpoint["model"])} tensors', flush=True)
        except Exception as error:
            print(f'{name}: {type(error).__name__}: {error}', flush=True)
    # As the tools end: gloo's threads torn down at exit can abort the process (SIGABRT).
    end_distributed()
''')


def test_a_failed_download_on_rank_0_stops_every_rank(web_server, tmp_path):
    """Rank 0 downloads first; when it fails, the other ranks learn it and raise too, instead of
    waiting at a barrier for ever. Then a URL that works loads on both."""
    site, url = web_server
    torch.save(official_format(FocalTransformer(**TINY_BACKBONE)), site / 'focal-tiny.pth')
    script = tmp_path / 'two_ranks.py'
    script.write_text(TWO_RANKS)
    port = free_port()
    ranks = [subprocess.Popen(tool_command(script, rank, port, url, tmp_path / 'cache'), env=tool_environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        # A deadline against the hang this test is about (each rank imports mmfocal, then loads twice).
        outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    missing = f'{url}/missing.pth'
    assert f'missing.pth: CheckpointDownloadError: could not download the checkpoint {missing} (HTTP 404' in outputs[0]
    assert (f'missing.pth: RuntimeError: rank 1: not loading {missing}, because rank 0 failed to download or load '
            f'it: CheckpointDownloadError: could not download the checkpoint {missing}') in outputs[1]
    assert all('focal-tiny.pth: loaded' in output for output in outputs), outputs


def test_a_damaged_zip_checkpoint_is_reported_as_incomplete(tmp_path):
    """Bytes changed inside the pickle of a whole zip file: damaged, not a refusal of its content."""
    path = tmp_path / 'epoch_3.pth'
    torch.save(dict(state_dict=dict(weight=torch.zeros(10))), path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        (name, ) = [n for n in archive.namelist() if n.endswith('/data.pkl')]
        start = bytes(data).index(archive.read(name))
    data[start + 2:start + 6] = b'\xff\xff\xff\xff'  # not pickle opcodes
    path.write_bytes(bytes(data))
    with pytest.raises(safe_load.IncompleteCheckpointError) as error_info:
        _load_checkpoint(str(path))
    assert str(path) in str(error_info.value)


# ---------------------------------------------------------------- legitimate checkpoints load

def official_format(backbone):
    """What the published ImageNet checkpoints hold: {'model': classifier state dict}."""
    state = OrderedDict(backbone.state_dict())
    for i in range(4):
        state.pop(f'norm{i}.weight'), state.pop(f'norm{i}.bias')
    channels = backbone.num_features[-1]
    state['norm.weight'], state['norm.bias'] = torch.ones(channels), torch.zeros(channels)
    state['head.weight'], state['head.bias'] = torch.zeros(1000, channels), torch.zeros(1000)
    return {'model': state}


def test_official_imagenet_checkpoints_load(tmp_path):
    official = official_checkpoint_entries(1)['focal-tiny-is224-ws7.pth']['keys']
    first = OrderedDict((key, torch.zeros(spec['shape'], dtype=getattr(torch, spec['dtype'])))
                        for key, spec in list(official.items())[:40])
    torch.save({'model': first}, tmp_path / 'focal-tiny-is224-ws7.pth')
    loaded = CheckpointLoader.load_checkpoint(str(tmp_path / 'focal-tiny-is224-ws7.pth'))
    assert list(loaded['model']) == list(first)
    # A whole one (a tiny model's, same format) through init_cfg Pretrained.
    backbone = FocalTransformer(**TINY_BACKBONE)
    torch.save(official_format(backbone), tmp_path / 'focal-mini.pth')
    loaded = FocalTransformer(**dict(TINY_BACKBONE, init_cfg=dict(type='Pretrained',
                                                                  checkpoint=str(tmp_path / 'focal-mini.pth'))))
    loaded.init_weights()
    assert torch.equal(loaded.layers[0].blocks[0].attn.qkv.weight, backbone.layers[0].blocks[0].attn.qkv.weight)


def test_numpy_values_of_any_dtype_load(tmp_path):
    # Hooks log numpy scalars and datasets keep numpy arrays in their metainfo, of whatever dtype.
    meta = dict(best_score=np.float32(0.5), palette=np.array([[1, 2, 3]], dtype=np.uint8),
                flags=np.array([True, False]), names=np.array(['circle', 'square']), count=np.int32(3))
    torch.save(dict(meta=meta, state_dict={}), tmp_path / 'numpy.pth')
    loaded = CheckpointLoader.load_checkpoint(str(tmp_path / 'numpy.pth'))['meta']
    assert loaded['best_score'] == np.float32(0.5) and loaded['palette'].dtype == np.uint8
    assert loaded['names'].tolist() == ['circle', 'square'] and loaded['count'] == 3


@pytest.fixture(scope='module')
def demo_data(demo_workspace):
    """The session's demo data (data/demo of the demo workspace)."""
    return demo_workspace / 'data' / 'demo'


def tiny_detector_config(work_dir, data_root):
    """configs/det/mask_rcnn_focal_t_demo.py on two demo pictures, one epoch, no evaluation."""
    cfg = shrink_backbone(Config.fromfile(DET_DEMO_CONFIG))
    cfg.train_dataloader.update(batch_size=1, num_workers=0, persistent_workers=False,
                                sampler=dict(type='DefaultSampler', shuffle=False))
    cfg.train_dataloader.dataset.update(data_root=osp.join(str(data_root), 'coco'), indices=2)
    return finish_config(cfg, work_dir, dict(type='EpochBasedTrainLoop', max_epochs=1),
                         dict(type='CheckpointHook', interval=1))


def tiny_segmenter_config(work_dir, data_root):
    """configs/seg/upernet_focal_t_512x512_160k_ade20k.py, tiny, 2 iterations on 64x64 demo crops."""
    cfg = shrink_backbone(Config.fromfile(osp.join(SEG_CONFIGS, 'upernet_focal_t_512x512_160k_ade20k.py')))
    cfg.model.data_preprocessor.size = (64, 64)
    batch_norm = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    cfg.model.decode_head.update(channels=16, num_classes=len(SEG_CLASSES), norm_cfg=batch_norm)
    cfg.model.auxiliary_head.update(channels=16, num_classes=len(SEG_CLASSES), norm_cfg=batch_norm)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False, sampler=dict(type='InfiniteSampler', shuffle=False),
        dataset=dict(type='BaseSegDataset', data_root=osp.join(str(data_root), 'ade'), reduce_zero_label=True,
                     img_suffix='.jpg', seg_map_suffix='.png',
                     data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                     metainfo=dict(classes=SEG_CLASSES, palette=[[i * 40] * 3 for i in range(len(SEG_CLASSES))]),
                     pipeline=pipeline))
    return finish_config(cfg, work_dir, dict(type='IterBasedTrainLoop', max_iters=2),
                         dict(type='CheckpointHook', by_epoch=False, interval=2))


RUNNER_ARGUMENTS = [name for name in inspect.signature(Runner.__init__).parameters if name not in ('self', 'cfg')]


def build_runner(cfg):
    """Runner.from_cfg(cfg), but without handing the Runner the config itself: mmengine formats
    its text with yapf for the log, the work dir and every checkpoint, which takes longer than
    these tiny trainings."""
    return Runner(**{name: cfg[name] for name in RUNNER_ARGUMENTS if name in cfg})


def finish_config(cfg, work_dir, train_cfg, checkpoint_hook):
    cfg.train_cfg = train_cfg
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = checkpoint_hook
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg


@pytest.fixture(scope='module')
def trained(demo_data, tmp_path_factory):
    """Checkpoints written by real mmdet and mmseg training runs (Runner + CheckpointHook)."""
    out = {}
    for name, make_config, file in (('mmdet', tiny_detector_config, 'epoch_1.pth'),
                                    ('mmseg', tiny_segmenter_config, 'iter_2.pth')):
        work_dir = tmp_path_factory.mktemp(name)
        build_runner(make_config(work_dir, demo_data)).train()
        out[name] = (make_config, str(work_dir / file))
    return out


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_training_checkpoints_load_as_data_and_need_exactly_what_mmfocal_allows(trained, scope):
    _, path = trained[scope]
    checkpoint = load_checkpoint_file(path)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(checkpoint)
    assert isinstance(next(iter(checkpoint['message_hub']['log_scalars'].values())), HistoryBuffer)
    # torch's own weights-only loader refuses them (import mmfocal adds nothing to its allow-list),
    # and what it refuses is among the names mmfocal's unpickler resolves (through checked builders).
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    if hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):  # torch >= 2.6 lists them
        refused = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        ours = set(CHECKPOINT_UNPICKLER.Unpickler.allowed.names)
        assert refused and refused <= ours, refused - ours


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_training_resumes_from_its_checkpoint(trained, demo_data, scope, tmp_path):
    make_config, path = trained[scope]
    cfg = make_config(tmp_path, demo_data)
    cfg.resume, cfg.load_from = True, path
    if scope == 'mmdet':
        cfg.train_cfg.max_epochs = 2
    else:
        cfg.train_cfg.max_iters = 3
    runner = build_runner(cfg)
    runner.train()
    assert (runner.epoch, runner.iter) == ((2, 4) if scope == 'mmdet' else (0, 3))


def test_a_published_mmdet_checkpoint_loads_as_load_from(demo_data, tmp_path):
    # The layout of mmdet's model-zoo files (written by mmcv 1.x runners, then published).
    cfg = tiny_detector_config(tmp_path / 'work', demo_data)
    detector = build_runner(cfg).model
    published = dict(meta=dict(mmdet_version='2.25.0', mmcv_version='1.5.0', CLASSES=DET_CLASSES, epoch=12,
                               iter=7330, time='Sat Jun 25 14:02:09 2022', config='model = dict()',
                               hook_msgs=dict(last_ckpt='work_dirs/epoch_12.pth')),
                     state_dict=OrderedDict((k, v + 1) for k, v in detector.state_dict().items()))
    torch.save(published, tmp_path / 'mask_rcnn_published.pth')
    cfg.load_from = str(tmp_path / 'mask_rcnn_published.pth')
    runner = build_runner(cfg)
    runner.load_or_resume()
    loaded = runner.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in published['state_dict'].items())


@pytest.mark.parametrize('resume', [False, True], ids=['load_from', 'resume'])
def test_runner_load_from_and_resume_refuse_code(malicious, demo_data, tmp_path, resume):
    path, marker, refused = malicious
    cfg = tiny_detector_config(tmp_path / 'work', demo_data)
    cfg.load_from, cfg.resume = path, resume
    runner = build_runner(cfg)
    with pytest.raises(UnsafeCheckpointError) as error_info:
        runner.load_or_resume()
    assert_refused(error_info, path, refused, marker)


def test_train_resume_refuses_code(shell_payload, demo_data, tmp_path):
    path, marker, refused = shell_payload
    config = tmp_path / 'tiny_mask_rcnn.py'
    tiny_detector_config(tmp_path / 'work', demo_data).dump(str(config))
    code, output = run_tool('train.py', config, '--work-dir', tmp_path / 'work', '--resume', path, check=False)
    assert code != 0
    assert 'NOT executed' in output and path in output and refused in output and not marker.exists()


def tiny_detector_test_config(work_dir, data_root):
    """tiny_detector_config with the demo config's test loader, loop and evaluator, for tools/test.py."""
    cfg = tiny_detector_config(work_dir, data_root)
    demo = Config.fromfile(DET_DEMO_CONFIG)
    coco = osp.join(str(data_root), 'coco')
    cfg.test_dataloader = demo.test_dataloader
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.data_root = coco
    cfg.test_cfg = demo.test_cfg
    cfg.test_evaluator = dict(demo.test_evaluator, ann_file=osp.join(coco, 'annotations', 'instances_val.json'))
    return cfg


def test_test_tool_refuses_code(shell_payload, demo_data, tmp_path):
    path, marker, refused = shell_payload
    config = tmp_path / 'tiny_mask_rcnn.py'
    tiny_detector_test_config(tmp_path / 'work', demo_data).dump(str(config))
    code, output = run_tool('test.py', config, path, '--work-dir', tmp_path / 'work', check=False)
    assert code != 0
    assert 'NOT executed' in output and path in output and refused in output and not marker.exists()


# ---------------------------------------------------------------- turning it off

def message_hub_checkpoint(path):
    """A checkpoint with what mmengine's message hub saves (a HistoryBuffer of numpy scalars)."""
    torch.save(dict(state_dict=OrderedDict(weight=torch.zeros(2)),
                    message_hub=dict(log_scalars={'loss': HistoryBuffer([np.float64(1.0)], [1])})), path)
    return str(path)


def loaders_are_mmengines_own():
    return all(loader.__module__ == 'mmengine.runner.checkpoint' for loader in CheckpointLoader._schemes.values()) \
        and mmengine_checkpoint.load_from_http.__module__ == 'mmengine.runner.checkpoint' \
        and mmengine_checkpoint.torch is torch


def test_uninstall_restores_torchs_and_mmengines_loading_and_install_makes_it_safe_again(malicious, tmp_path):
    from mmfocal import engine
    path, marker, refused = malicious
    hub = message_hub_checkpoint(tmp_path / 'hub.pth')
    allowed = getattr(torch.serialization, 'get_safe_globals', list)  # torch < 2.4 has no allow-list
    before = allowed()
    # What stock torch.load does on its own: weights-only by default from torch 2.6; before, it unpickles
    # anything, and the malicious file would run (so that part is not tried there).
    stock_is_weights_only = inspect.signature(torch.load).parameters['weights_only'].default is not False
    assert engine.is_installed() and not loaders_are_mmengines_own()
    try:
        engine.uninstall()
        engine.uninstall()  # idempotent
        assert not engine.is_installed() and loaders_are_mmengines_own()
        assert allowed() == before  # neither install nor uninstall changes it
        if stock_is_weights_only:
            with pytest.raises(pickle.UnpicklingError) as error_info:  # torch's own refusal, not ours
                torch.load(hub)
            assert not isinstance(error_info.value, UnsafeCheckpointError)
            with pytest.raises(pickle.UnpicklingError) as error_info:
                CheckpointLoader.load_checkpoint(path, map_location='cpu')
            assert not isinstance(error_info.value, UnsafeCheckpointError) and not marker.exists()
    finally:
        engine.install()
    assert engine.is_installed() and not loaders_are_mmengines_own()
    assert allowed() == before
    assert isinstance(CheckpointLoader.load_checkpoint(hub)['message_hub']['log_scalars']['loss'], HistoryBuffer)
    with pytest.raises(UnsafeCheckpointError) as error_info:
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert_refused(error_info, path, refused, marker)


def test_mmfocal_no_patches_keeps_import_mmfocal_from_installing():
    script = textwrap.dedent('''
        import mmfocal
        from mmengine.fileio import get_file_backend
        from mmfocal import engine
        print(engine.is_installed(), type(get_file_backend('a.pth')).__name__)
        engine.install()
        print(engine.is_installed(), type(get_file_backend('a.pth')).__name__)
    ''')
    for value, first in (('1', 'False LocalBackend'), ('0', 'True AtomicLocalBackend')):
        output = subprocess.run([sys.executable, '-c', script], check=True, capture_output=True, text=True,
                                env=tool_environment(MMFOCAL_NO_PATCHES=value)).stdout
        assert output.split('\n')[:2] == [first, 'True AtomicLocalBackend'], (value, output)
