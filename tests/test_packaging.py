"""A downstream project inherits our configs from the installed package (``mmfocal::`` paths): in
this checkout (as an editable install sees it), and from a non-editable install (``pip install
--target``, the files a wheel holds, nothing of the checkout on the path), where it trains on the
demo data with our tools/train.py and with mmdet's own tools/train.py (through
``python -m mmfocal.mim``, which imports mmfocal before mmdet's script reads the config)."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import mmdet
import pytest
from mmengine.config import Config

import mmfocal
from mmfocal.mim import main as mim_main
from mmfocal.mim import packaged_configs

from .helpers import CONFIGS, DET_CONFIGS, ROOT, TOOLS

# A downstream project's config: our Mask R-CNN Focal-T 3x on its own data (here the demo's four
# shapes, read relative to the working directory) at its own scale.
DOWNSTREAM_CONFIG = """
_base_ = ['mmfocal::det/mask_rcnn_focal_t_3x.py', 'mmfocal::_base_/focal_demo_coco.py']
custom_imports = dict(imports=['mmfocal'], allow_failed_imports=False)

model = dict(roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(_base_.demo_train_dataset, pipeline=train_pipeline))
train_cfg = dict(max_epochs=1)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
"""
# What the test shrinks for time: a one-block, 32-channel backbone with no pretrained weights, and
# 32 sampled RoIs of 100 proposals instead of 512 of 2000 (the box head's FC layers on 512 RoIs
# took 10 s an iteration on one thread).
TINY_MODEL = ['model.backbone.arch=None', 'model.backbone.embed_dims=32', 'model.backbone.depths=[1,1,1,1]',
              'model.backbone.num_heads=[1,2,4,8]', 'model.backbone.init_cfg=None',
              'model.neck.in_channels=[32,64,128,256]', 'model.train_cfg.rpn_proposal.max_per_img=100',
              'model.train_cfg.rcnn.sampler.num=32']
MMDET_TRAIN = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')


def write_downstream_config(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, 'mask_rcnn_focal_t_shapes.py')
    with open(path, 'w') as file:
        file.write(DOWNSTREAM_CONFIG)
    return path


def test_mmfocal_paths_resolve_in_the_checkout(tmp_path):
    """As an editable install sees it: the package's .mim/configs is the repository's configs/."""
    assert osp.samefile(packaged_configs(), CONFIGS)
    assert osp.dirname(osp.dirname(packaged_configs())) == osp.dirname(mmfocal.__file__)
    cfg = Config.fromfile(write_downstream_config(tmp_path))
    ours = Config.fromfile(osp.join(DET_CONFIGS, 'mask_rcnn_focal_t_3x.py'))
    assert cfg.model.backbone == ours.model.backbone
    # mmengine marks what a `mmfocal::` base defines itself (this optimizer) with _scope_='mmfocal'
    assert cfg.optim_wrapper.pop('_scope_') == 'mmfocal' and cfg.optim_wrapper == ours.optim_wrapper
    assert cfg.model.roi_head.bbox_head.num_classes == 4 and cfg.train_dataloader.dataset.data_root == 'data/demo/coco/'


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``pip install --no-deps --target DIR`` of a copy of the checkout (as a wheel installs it: the
    configs copied into mmfocal/.mim), with no build isolation (no network)."""
    root = tmp_path_factory.mktemp('install')
    source = root / 'source'
    ignore = shutil.ignore_patterns('.git', '.venv*', 'work_dirs', 'data', 'build', '*.egg-info', '__pycache__',
                                    '.whl', '.pytest_cache')
    shutil.copytree(ROOT, source, symlinks=True, ignore=ignore)
    target = root / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                    '--no-index', '--target', str(target), str(source)], check=True, capture_output=True,
                   timeout=600)
    shutil.rmtree(source)  # nothing of the checkout is left to be found
    return target


def test_the_installed_package_holds_the_configs(installed):
    packaged = installed / 'mmfocal' / '.mim' / 'configs'
    assert not packaged.is_symlink() and (packaged / 'det' / 'mask_rcnn_focal_t_3x.py').is_file()
    assert (packaged / 'det' / '_base_' / 'focal_detection.py').is_file()
    assert (installed / 'mmfocal' / '.mim' / 'model-index.yml').is_file()
    assert (packaged / 'det' / 'metafile.yml').is_file()
    assert (installed / 'mmfocal' / 'models' / 'layers' / 'csrc').is_dir()  # the kernels' source


def test_downstream_config_trains_from_the_installed_package(installed, demo_workspace, tmp_path):
    """Our tools/train.py and mmdet's own tools/train.py, 2 iterations each on the demo data, run
    from a folder outside the checkout with only the installed package on the path."""
    config = write_downstream_config(tmp_path / 'my_project')
    # Without the compiled CPU kernels: built from the installed copy's source path, torch would
    # rebuild them here, and again for the checkout's path in the tests after (minutes).
    env = dict(os.environ, PYTHONPATH=str(installed), PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1',
               MMFOCAL_COMPILED_KERNELS='0')
    cwd = str(demo_workspace)
    for tool, work_dir in ((osp.join(TOOLS, 'train.py'), 'ours'), (MMDET_TRAIN, 'mmdet')):
        command = ['-m', 'mmfocal.mim', tool] if tool == MMDET_TRAIN else [tool]
        work = tmp_path / work_dir
        result = subprocess.run([sys.executable, *command, config, '--work-dir', str(work), '--cfg-options',
                                 *TINY_MODEL], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert (work / 'epoch_1.pth').is_file(), output[-2000:]
        log = next(work.glob('*/*.log')).read_text()
        assert 'Epoch(train) [1][2/2]' in log, log[-2000:]
    # What ran was the installed copy, not the checkout's.
    find = "import importlib.util; print(importlib.util.find_spec('mmfocal').origin)"  # as `import` finds it
    where = subprocess.run([sys.executable, '-c', find], cwd=cwd, env=env, capture_output=True, text=True, check=True,
                           timeout=600).stdout
    assert where.startswith(str(installed)), where


def test_without_mmfocal_imported_mmengine_refuses_the_scope(tmp_path, monkeypatch):
    """Why mmdet's own scripts go through `python -m mmfocal.mim`: they read the config before
    anything imports mmfocal, and mmengine alone knows no `mmfocal::`."""
    from mmengine.config.utils import MODULE2PACKAGE
    monkeypatch.delitem(MODULE2PACKAGE, 'mmfocal')
    with pytest.raises(AssertionError, match='mmengine does not support to load mmfocal config'):
        Config.fromfile(write_downstream_config(tmp_path))


@pytest.mark.parametrize('argv, message', [([], 'usage: python -m mmfocal.mim SCRIPT'),
                                           (['no_such_train.py'], 'script not found: no_such_train.py')])
def test_mim_runner_says_what_is_wrong(argv, message):
    with pytest.raises(SystemExit, match=message):
        mim_main(argv)
