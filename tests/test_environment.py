"""The environment tools/setup_env.sh makes: mmcv's compiled ops built against the running torch,
never a wheel built against another one or with other ops, and torchvision working beside torch.

The mmcv wheel cache is tested through its command line, as the set-up runs it: the set-up runs
tools/mmcv_wheel_cache.py before mmfocal is installed, so it is a script of its own, not part of
the package."""
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from .helpers import TOOLS, ScriptLauncher

MMCV = '2.1.0'
WHEEL = f'mmcv-{MMCV}-cp311-cp311-linux_x86_64.whl'
# The record the set-up leaves in an mmcv it installed (mmcv/.mmfocal_built_for), holding its key.
MARKER = '.mmfocal_built_for'
# The cache key's part before the ops: Python, torch (with its local build tag), CUDA, C++ ABI.
TORCH_KEY = (f'cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-'
             f'cuda{torch.version.cuda or "none"}-cxx11abi{int(torch.compiled_with_cxx11_abi())}')


@pytest.fixture(scope='module')
def wheel_cache():
    """``wheel_cache(*ARGS, **ENVIRON)``: ``python tools/mmcv_wheel_cache.py ARGS`` as tools/setup_env.sh
    runs it, in this environment with FORCE_CUDA and TORCH_CUDA_ARCH_LIST unset unless ENVIRON sets
    them (and the rest of ENVIRON); the completed process. torch, the script's costly import, is
    imported once for all of them (:class:`~tests.helpers.ScriptLauncher`)."""
    base = {name: value for name, value in os.environ.items() if name not in ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST')}
    with ScriptLauncher('mmcv_wheel_cache.py', preload=['torch']) as launcher:
        yield lambda *args, **environ: launcher(*args, env=dict(base, **environ))


@pytest.fixture(scope='module')
def running_key(wheel_cache, tmp_path_factory) -> str:
    """The cache key of the running torch and the ops a build here compiles (the set-up's environment)."""
    made = wheel_cache('dir', tmp_path_factory.mktemp('wheels'), MMCV)
    assert made.returncode == 0, made.stderr
    return os.path.basename(made.stdout.strip())


def test_a_wheel_built_against_another_torch_is_never_picked_up(tmp_path, wheel_cache, running_key):
    other_torch = 'cp311-torch2.13.0+cpu-cudanone-cxx11abi1-cpuops'
    assert running_key != other_torch
    stale = tmp_path / f'mmcv-{MMCV}' / other_torch
    stale.mkdir(parents=True)
    (stale / WHEEL).touch()
    # As tools/setup_env.sh asks: no wheel for this torch -> exit 1, so it builds one.
    found = wheel_cache('find', tmp_path, MMCV)
    assert found.returncode == 1 and found.stdout == ''
    made = wheel_cache('dir', tmp_path, MMCV)
    assert made.returncode == 0
    made = made.stdout.strip()
    assert made == str(tmp_path / f'mmcv-{MMCV}' / running_key) != str(stale) and os.path.isdir(made)
    open(os.path.join(made, WHEEL), 'w').close()
    assert wheel_cache('find', tmp_path, MMCV).stdout.strip() == os.path.join(made, WHEEL)


def test_the_cache_key_names_torch_cuda_abi_and_the_ops_built(tmp_path, wheel_cache, running_key):
    assert running_key.startswith(f'{TORCH_KEY}-')
    assert f'torch{torch.__version__}-' in running_key
    assert f'cuda{torch.version.cuda or "none"}-' in running_key
    assert f'-cxx11abi{int(torch.compiled_with_cxx11_abi())}-' in running_key

    def key(**environ):
        return os.path.basename(wheel_cache('dir', tmp_path, MMCV, **environ).stdout.strip())

    # mmcv's build compiles CUDA ops where torch sees a GPU or FORCE_CUDA=1 is set.
    if not torch.cuda.is_available():
        assert running_key == key(FORCE_CUDA='0', TORCH_CUDA_ARCH_LIST='9.0') == f'{TORCH_KEY}-cpuops'
    forced = key(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0;8.0+PTX')
    assert forced == f'{TORCH_KEY}-cudaops8.0+PTX_9.0'
    other_gpus = wheel_cache('ops', FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0').stdout.strip()
    assert other_gpus == 'cudaops8.0' and f'{TORCH_KEY}-{other_gpus}' != forced


def test_cuda_ops_asked_for_where_they_cannot_be_built_are_refused_in_one_line(wheel_cache):
    unasked = wheel_cache('cuda-check', FORCE_CUDA='0')
    assert unasked.returncode == 0 and unasked.stderr == ''
    problem = wheel_cache('cuda-check', FORCE_CUDA='1')
    if torch.version.cuda is None:
        assert problem.returncode == 1 and 'not a CUDA build' in problem.stderr
    elif not torch.cuda.is_available():
        assert problem.returncode == 1
        assert 'TORCH_CUDA_ARCH_LIST' in problem.stderr and len(problem.stderr.strip().splitlines()) == 1
        assert wheel_cache('cuda-check', FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0').returncode == 0


def _fake_wheel(folder, links: bytes) -> str:
    """An mmcv wheel file whose compiled ops library names the libraries ``links``."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, WHEEL)
    with zipfile.ZipFile(path, 'w') as wheel:
        wheel.writestr('mmcv/__init__.py', '')
        wheel.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF...' + links + b'...')
    return path


def test_a_wheel_cached_before_the_ops_were_keyed_serves_only_if_it_has_no_cuda_ops(tmp_path, wheel_cache):
    """The folders of earlier set-ups (no ops part in the name) hold wheels built without FORCE_CUDA:
    CPU ops on a machine without a GPU. Such a wheel is found in place for the CPU-ops key (a set-up
    after the key changed rebuilds nothing); one with CUDA ops never is."""
    cuda_ops = dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0')
    cpu_root, cuda_root = tmp_path / 'cpu', tmp_path / 'cuda'
    cpu_wheel = _fake_wheel(cpu_root / f'mmcv-{MMCV}' / TORCH_KEY, b'libc10.so\x00libtorch_cpu.so')
    found = wheel_cache('find', cpu_root, MMCV, FORCE_CUDA='0')
    if not torch.cuda.is_available():  # the CPU-ops key
        assert found.returncode == 0 and found.stdout.strip() == cpu_wheel
    assert wheel_cache('find', cpu_root, MMCV, **cuda_ops).returncode == 1
    assert os.path.exists(cpu_wheel)  # left where the set-ups of that time look

    _fake_wheel(cuda_root / f'mmcv-{MMCV}' / TORCH_KEY, b'libc10.so\x00libc10_cuda.so\x00libcudart.so.12')
    assert wheel_cache('find', cuda_root, MMCV, FORCE_CUDA='0').returncode == 1
    assert wheel_cache('find', cuda_root, MMCV, **cuda_ops).returncode == 1


def test_installed_mmcv_ops_were_built_against_this_torch(wheel_cache, running_key):
    import mmcv
    import mmcv.ops
    marker = os.path.join(os.path.dirname(mmcv.__file__), MARKER)
    assert open(marker).read().strip() == running_key
    kept = wheel_cache('installed', MMCV)
    assert kept.returncode == 0 and kept.stdout == ''  # the set-up keeps it, silently
    assert wheel_cache('installed', '2.2.0').returncode == 1
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_an_mmcv_the_set_up_did_not_install_stays_where_its_ops_serve(tmp_path, wheel_cache):
    """OpenMMLab's wheel (or the user's build) has no record of the set-up: it stays where its ops
    run against this torch, unless CUDA ops are wanted and it has none; CPU-only ops beside a CUDA
    torch are said in one line. Such an mmcv here: the installed one's files, linked from a folder
    of their own without the set-up's record, first on the path."""
    import mmcv.ops
    installed = os.path.dirname(mmcv.__file__)
    elsewhere = tmp_path / 'site' / 'mmcv'
    elsewhere.mkdir(parents=True)
    for name in os.listdir(installed):
        if name != MARKER:
            (elsewhere / name).symlink_to(os.path.join(installed, name))
    # PYTHONDONTWRITEBYTECODE: nothing written into the installed package through the links
    path = dict(PYTHONPATH=os.pathsep.join([str(tmp_path / 'site')] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
                PYTHONDONTWRITEBYTECODE='1')
    cuda = mmcv.ops.get_compiling_cuda_version()
    kept = wheel_cache('installed', MMCV, FORCE_CUDA='0', **path)
    if cuda == 'not available' and torch.cuda.is_available():
        assert kept.returncode == 1
        return
    assert kept.returncode == 0, kept.stderr
    kept = kept.stdout.strip()
    assert kept.startswith(f'keeping the installed mmcv {MMCV} (not installed by this set-up')
    if cuda == 'not available':
        assert 'for the CPU only' in kept
        assert (torch.version.cuda is not None) == kept.endswith(wheel_cache('note').stdout.strip())
        # CUDA ops asked for (FORCE_CUDA=1): a CPU-only mmcv does not serve
        assert wheel_cache('installed', MMCV, FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0', **path).returncode == 1


def test_torchvision_ops_run_beside_torch():
    import torchvision.ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_the_cxx20_compiler_wrapper_raises_the_standard():
    defines = subprocess.run(['bash', os.path.join(TOOLS, 'cxx_std20.sh'), '-std=c++17', '-dM', '-E', '-x', 'c++',
                              '/dev/null'], capture_output=True, text=True, check=True).stdout
    assert '#define __cplusplus 202002L' in defines
