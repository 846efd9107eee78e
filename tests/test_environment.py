"""The environment tools/setup_env.sh makes: mmcv's compiled ops built against the running torch,
never a wheel built against another one, and torchvision working beside torch."""
import os
import subprocess
import sys

import torch

from .helpers import TOOLS, load_tool

MMCV = '2.1.0'
WHEEL = f'mmcv-{MMCV}-cp311-cp311-linux_x86_64.whl'


def test_a_wheel_built_against_another_torch_is_never_picked_up(tmp_path):
    cache = load_tool('mmcv_wheel_cache')
    other_torch = 'cp311-torch2.13.0+cpu-cudanone-cxx11abi1'
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


def test_the_cache_key_names_torch_cuda_and_abi():
    key = load_tool('mmcv_wheel_cache').build_key()
    assert f'torch{torch.__version__}-' in key
    assert f'cuda{torch.version.cuda or "none"}-' in key
    assert key.endswith(f'cxx11abi{int(torch.compiled_with_cxx11_abi())}')


def test_installed_mmcv_ops_were_built_against_this_torch():
    import mmcv
    import mmcv.ops
    marker = os.path.join(os.path.dirname(mmcv.__file__), '.mmfocal_built_for')
    assert open(marker).read().strip() == load_tool('mmcv_wheel_cache').build_key()
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    _, keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_torchvision_ops_run_beside_torch():
    import torchvision.ops
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_the_cxx20_compiler_wrapper_raises_the_standard():
    defines = subprocess.run(['bash', os.path.join(TOOLS, 'cxx_std20.sh'), '-std=c++17', '-dM', '-E', '-x', 'c++',
                              '/dev/null'], capture_output=True, text=True, check=True).stdout
    assert '#define __cplusplus 202002L' in defines
