"""Test isolation for mmengine's process-wide state; fixtures shared by several test files (the demo
data, a local web server, a trained classifier); the device the attention tests run on."""
import http.server
import threading
from functools import partial

import pytest
import torch
from mmengine.registry import DefaultScope

from .helpers import TEST_DEVICE


def _default_scope_restored():
    """A Runner (or init_default_scope) sets mmengine's default scope for the whole process, which
    would send later registry builds of other tests to the wrong package; put it back."""
    before = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


# Per test, and per module for what module-scoped fixtures (trained Runners) set before it.
restore_default_scope = pytest.fixture(autouse=True)(_default_scope_restored)
restore_default_scope_after_module = pytest.fixture(autouse=True, scope='module')(_default_scope_restored)


@pytest.fixture(scope='session')
def demo_workspace(tmp_path_factory):
    """A folder holding ``data/demo`` (the demo configs' relative data root), made once per run:
    4 training and 2 validation pictures per task at 96 pixels. Run tools with ``cwd`` there."""
    from .helpers import make_demo_data
    root = tmp_path_factory.mktemp('demo_workspace')
    make_demo_data(str(root / 'data' / 'demo'), '--scale', '96', '--det-train', '4', '--det-val', '2',
                   '--seg-train', '4', '--seg-val', '2')
    return root


@pytest.fixture
def web_server(tmp_path, monkeypatch):
    """A real http server on localhost serving tmp_path/site; the torch hub cache goes to tmp_path."""
    site = tmp_path / 'site'
    site.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='session')
def device() -> torch.device:
    """Where the attention and backbone tests that take it run their model: the CPU, or the
    device named by MMFOCAL_TEST_DEVICE (``cuda`` on a GPU machine, see benchmarks/gpu_check.py).
    References stay on the CPU. Asking for a device that is not there is an error, not a skip."""
    device = torch.device(TEST_DEVICE)
    if device.type == 'cuda' and not torch.cuda.is_available():
        pytest.fail(f'MMFOCAL_TEST_DEVICE={TEST_DEVICE} but torch sees no CUDA device')
    return device


@pytest.fixture(scope='session')
def imagenet_workspace(tmp_path_factory):
    """A folder holding ``data/imagenet`` in ImageNet's layout (mmpretrain's configs' data root),
    made once per run: 10 classes, one training and one validation picture each (40x48)."""
    from .helpers import make_image_folder
    root = tmp_path_factory.mktemp('imagenet_workspace')
    make_image_folder(str(root / 'data' / 'imagenet'))
    return root


@pytest.fixture(scope='session')
def trained_classifier(imagenet_workspace, tmp_path_factory):
    """A real classification run: tools/train.py on configs/cls/focal_t_in1k.py at the mini
    classifier's size (tests/helpers.py's tiny_classifier_config), 2 epochs of 2 iterations, in
    deterministic mode, with the SIGKILL hook of the exact-resume tests (off). Returns the config,
    the work dir (epoch_1.pth, epoch_2.pth) and the log."""
    from .helpers import run_tool, tiny_classifier_config
    root = tmp_path_factory.mktemp('trained_classifier')
    config = tiny_classifier_config(
        root / 'tiny_focal_t_in1k.py', str(imagenet_workspace / 'data' / 'imagenet'),
        randomness=dict(seed=0, deterministic=True),
        custom_imports=dict(imports=['mmfocal', 'tests.helpers'], allow_failed_imports=False),
        custom_hooks=[dict(type='SigkillAfterIteration', iteration=0)])
    _, log = run_tool('train.py', config, '--work-dir', root / 'straight', cwd=imagenet_workspace)
    return dict(config=config, work_dir=root / 'straight', log=log)
