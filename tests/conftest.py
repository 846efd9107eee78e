"""Test isolation for mmengine's process-wide state; fixtures shared by several test files; the device the attention tests run on."""
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
