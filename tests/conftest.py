"""Test isolation for mmengine's process-wide state; fixtures shared by several test files."""
import http.server
import threading
from functools import partial

import pytest
from mmengine.registry import DefaultScope


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
