"""The environment tools/setup_env.sh makes: mmcv's compiled ops built against the running torch,
never a wheel built against another one or with other ops, and torchvision working beside torch."""
import os
import subprocess
import sys
import zipfile

import torch

from .helpers import TOOLS, load_tool

MMCV = '2.1.0'
WHEEL = f'mmcv-{MMCV}-cp311-cp311-linux_x86_64.whl'


def test_a_wheel_built_against_another_torch_is_never_picked_up(tmp_path):
    cache = load_tool('mmcv_wheel_cache')
    other_torch = 'cp311-torch2.13.0+cpu-cudanone-cxx11abi1-cpuops'
    assert cache.build_key() != other_torch
    stale = cache.wheel_dir(str(tmp_path), MMCV, key=other_torch)
    os.makedirs(stale)
    open(os.path.join(stale, WHEEL), 'w').close()
    assert cache.find_wheel(str(tmp_path), MMCV) is None
    # As tools/setup_env.sh asks: no wheel for this torch -> exit 1, so it builds one.
    script = os.path.join(TOOLS, 'mmcv_wheel_cache.py')
    found = subprocess.run([sys.executable, script, 'find', str(tmp_path), MMCV],
                           capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == ''
    made = subprocess.run([sys.executable, script, 'dir', str(tmp_path), MMCV], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert made == cache.wheel_dir(str(tmp_path), MMCV) != stale and os.path.isdir(made)
    open(os.path.join(made, WHEEL), 'w').close()
    assert cache.find_wheel(str(tmp_path), MMCV) == os.path.join(made, WHEEL)


def test_the_cache_key_names_torch_cuda_abi_and_the_ops_built():
    cache = load_tool('mmcv_wheel_cache')
    key = cache.build_key()
    assert f'torch{torch.__version__}-' in key
    assert f'cuda{torch.version.cuda or "none"}-' in key
    assert f'-cxx11abi{int(torch.compiled_with_cxx11_abi())}-' in key
    # mmcv's build compiles CUDA ops where torch sees a GPU or FORCE_CUDA=1 is set.
    cpu_only = dict(FORCE_CUDA='0', TORCH_CUDA_ARCH_LIST='9.0')
    if not torch.cuda.is_available():
        assert cache.build_key(cpu_only).endswith('-cpuops')
    forced = cache.build_key(dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0;8.0+PTX'))
    assert forced == f'{cache.torch_key()}-cudaops8.0+PTX_9.0' != cache.build_key(dict(FORCE_CUDA='1',
                                                                                     TORCH_CUDA_ARCH_LIST='8.0'))


def test_cuda_ops_asked_for_where_they_cannot_be_built_are_refused_in_one_line():
    cache = load_tool('mmcv_wheel_cache')
    assert cache.cuda_problem(dict(FORCE_CUDA='0')) is None
    problem = cache.cuda_problem(dict(FORCE_CUDA='1'))
    if torch.version.cuda is None:
        assert 'not a CUDA build' in problem
    elif not torch.cuda.is_available():
        assert 'TORCH_CUDA_ARCH_LIST' in problem and '\n' not in problem
        assert cache.cuda_problem(dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0')) is None


def _fake_wheel(folder, links: bytes) -> str:
    """An mmcv wheel file whose compiled ops library names the libraries ``links``."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, WHEEL)
    with zipfile.ZipFile(path, 'w') as wheel:
        wheel.writestr('mmcv/__init__.py', '')
        wheel.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF...' + links + b'...')
    return path


def test_a_wheel_cached_before_the_ops_were_keyed_serves_only_if_it_has_no_cuda_ops(tmp_path):
    """The folders of earlier set-ups (no ops part in the name) hold wheels built without FORCE_CUDA:
    CPU ops on a machine without a GPU. Such a wheel is found in place for the CPU-ops key (a set-up
    after the key changed rebuilds nothing); one with CUDA ops never is."""
    cache = load_tool('mmcv_wheel_cache')
    root = str(tmp_path)
    torch_key = 'cp311-torch2.14.1+cu130-cuda13.0-cxx11abi1'
    cpu_wheel = _fake_wheel(cache.wheel_dir(root, MMCV, torch_key), b'libc10.so\x00libtorch_cpu.so')
    assert cache.find_wheel(root, MMCV, key=f'{torch_key}-cpuops') == cpu_wheel
    assert cache.find_wheel(root, MMCV, key=f'{torch_key}-cudaops8.0') is None
    assert os.path.exists(cpu_wheel)  # left where the set-ups of that time look

    other = 'cp311-torch2.1.2+cu121-cuda12.1-cxx11abi0'
    _fake_wheel(cache.wheel_dir(root, MMCV, other), b'libc10.so\x00libc10_cuda.so\x00libcudart.so.12')
    assert cache.find_wheel(root, MMCV, key=f'{other}-cpuops') is None
    assert cache.find_wheel(root, MMCV, key=f'{other}-cudaops8.0') is None


def test_installed_mmcv_ops_were_built_against_this_torch():
    import mmcv
    import mmcv.ops
    cache = load_tool('mmcv_wheel_cache')
    marker = os.path.join(os.path.dirname(mmcv.__file__), cache.MARKER)
    assert open(marker).read().strip() == cache.build_key()
    assert cache.installed_mmcv_stays(MMCV) == ''  # the set-up keeps it, silently
    assert cache.installed_mmcv_stays('2.2.0') is None
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_an_mmcv_the_set_up_did_not_install_stays_where_its_ops_serve():
    """OpenMMLab's wheel (or the user's build) has no record of the set-up: it stays where its ops
    run against this torch, unless CUDA ops are wanted and it has none; CPU-only ops beside a CUDA
    torch are said in one line."""
    import mmcv.ops
    cache = load_tool('mmcv_wheel_cache')
    cuda = mmcv.ops.get_compiling_cuda_version()
    kept = cache.installed_mmcv_stays(MMCV, dict(FORCE_CUDA='0'), marker='no-record-here')
    if cuda == 'not available' and torch.cuda.is_available():
        assert kept is None
        return
    assert kept.startswith(f'keeping the installed mmcv {MMCV} (not installed by this set-up')
    if cuda == 'not available':
        assert 'for the CPU only' in kept
        assert (torch.version.cuda is not None) == kept.endswith(cache.cpu_ops_beside_cuda_torch_note())
        # CUDA ops asked for (FORCE_CUDA=1): a CPU-only mmcv does not serve
        assert cache.installed_mmcv_stays(MMCV, dict(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='8.0'),
                                          marker='no-record-here') is None


def test_torchvision_ops_run_beside_torch():
    import torchvision.ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_the_cxx20_compiler_wrapper_raises_the_standard():
    defines = subprocess.run(['bash', os.path.join(TOOLS, 'cxx_std20.sh'), '-std=c++17', '-dM', '-E', '-x', 'c++',
                              '/dev/null'], capture_output=True, text=True, check=True).stdout
    assert '#define __cplusplus 202002L' in defines
