"""tools/train.py, tools/test.py and tools/dist_train.sh, run for real on the demo configs.

Each test trains the demo detector or segmenter for a few iterations on the tiny demo data set
made once per test run (conftest's ``demo_workspace``; the demo configs' data paths are relative,
so the tools run there), then checks what the tools wrote and printed. The last tests run the
tools without data and check the one-line errors.
"""
import ast
import glob
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from mmfocal.cli import end_distributed
from mmfocal.engine.checkpoint_files import check_checkpoint_file
from mmfocal.errors import BadArgumentError, MissingFileError

from .helpers import (
    DET_CONFIGS,
    IN_PROCESS,
    ROOT,
    SEG_CONFIGS,
    free_port,
    override,
    run_tool,
    tool_command,
    tool_environment,
)
from .helpers import DET_DEMO_CONFIG as DET_CONFIG
from .helpers import SEG_DEMO_CONFIG as SEG_CONFIG

# A few iterations of small pictures; validation and logging every epoch / few iterations.
DET_SHORT = IN_PROCESS + [
    'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']
SEG_SHORT = IN_PROCESS + [
    'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
    'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']


def train(demo_workspace, config, work_dir, options, *extra, check=True):
    return run_tool('train.py', config, '--work-dir', work_dir, *extra, '--cfg-options', *options, cwd=demo_workspace,
                    check=check)


def checkpoint_meta(path):
    # mmengine's training checkpoints hold numpy arrays, which torch's weights-only loader refuses:
    # loaded as data by mmfocal's.
    from mmfocal.engine.safe_load import load_checkpoint_file
    return load_checkpoint_file(str(path), map_location='cpu')


def optimizer_steps(checkpoint):
    states = checkpoint['optimizer']['state'].values()
    return {int(state['step']) for state in states}


def test_detector_trains_tests_and_draws(demo_workspace, tmp_path):
    work_dir = tmp_path / 'det'
    _, log = train(demo_workspace, DET_CONFIG, work_dir, DET_SHORT)
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()
    assert re.search(r'Epoch\(train\) +\[1\]\[2/2\].*eta:', log)  # progress with ETA
    assert 'coco/bbox_mAP' in log  # validation ran

    show_dir = tmp_path / 'drawn'
    pickle_file = tmp_path / 'predictions.pkl'
    _, out = run_tool('test.py', DET_CONFIG, checkpoint, '--work-dir', tmp_path / 'det_test', '--show-dir', show_dir,
                      '--out', pickle_file, cwd=demo_workspace)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert re.search(rf'^  {key}: -?[0-9.]+$', out, re.M), key
    drawn = sorted(os.listdir(show_dir))
    assert drawn == ['000000.png', '000001.png']  # one PNG per validation picture
    assert pickle_file.is_file()


def test_detector_tta_refuses_masks_clearly(demo_workspace, tmp_path):
    code, out = run_tool('test.py', DET_CONFIG, __file__, '--tta', cwd=demo_workspace, check=False)
    assert code != 0 and f'--tta: {DET_CONFIG} predicts instance masks' in out and 'merges boxes only' in out


def test_segmenter_trains_tests_with_tta_and_resumes_from_a_path(demo_workspace, tmp_path):
    work_dir = tmp_path / 'seg'
    _, log = train(demo_workspace, SEG_CONFIG, work_dir, SEG_SHORT)
    assert (work_dir / 'iter_2.pth').is_file()
    assert re.search(r'Iter\(train\) +\[2/2\]', log) and 'mIoU' in log

    for extra in ([], ['--tta']):
        _, out = run_tool('test.py', SEG_CONFIG, work_dir / 'iter_2.pth', '--work-dir', tmp_path / 'test',
                          '--show-dir', tmp_path / 'drawn', *extra,
                          '--cfg-options', 'default_hooks.visualization.interval=1', cwd=demo_workspace)
        for key in ('aAcc', 'mIoU', 'mAcc'):
            assert re.search(rf'^  {key}: [0-9.]+$', out, re.M), (extra, key)
    assert sorted(os.listdir(tmp_path / 'drawn')) == ['ADE_val_00000000.png',
                                                      'ADE_val_00000001.png']

    # --resume CHECKPOINT continues that run: iteration, optimizer and schedule.
    _, log = train(demo_workspace, SEG_CONFIG, work_dir, override(SEG_SHORT, 'train_cfg.max_iters=4'),
                   '--resume', str(work_dir / 'iter_2.pth'))
    assert 'resumed epoch: 0, iter: 2' in log
    final = checkpoint_meta(work_dir / 'iter_4.pth')
    assert final['meta']['iter'] == 4
    assert optimizer_steps(final) == {4}


def test_resume_after_kill_mid_epoch(demo_workspace, tmp_path):
    """Killed during its second epoch, a run resumed with a bare --resume starts from its
    newest complete checkpoint, with the optimizer and schedule where they were."""
    work_dir = tmp_path / 'det'
    # The demo's cosine decay ends at its last epoch (2), where it stops counting steps: here it
    # runs on past the 3 epochs trained (to 6, as the demo's did before).
    options = override(DET_SHORT, 'train_cfg.max_epochs=3', 'train_cfg.val_interval=10', 'param_scheduler.1.end=6')
    process = subprocess.Popen(tool_command('train.py', DET_CONFIG, '--work-dir', work_dir, '--cfg-options', *options),
                               cwd=demo_workspace, env=tool_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # Kill it as soon as its second epoch has begun: the first is saved, the second is not.
    killed = False
    for line in process.stdout:
        if re.search(r'Epoch\(train\) +\[2\]\[1/2\]', line):
            process.send_signal(signal.SIGKILL)
            killed = True
            break
    process.wait()
    process.stdout.close()
    assert killed, 'training ended before its second epoch began'
    assert (work_dir / 'epoch_1.pth').is_file() and not (work_dir / 'epoch_2.pth').exists()

    _, log = train(demo_workspace, DET_CONFIG, work_dir, options, '--resume')
    assert 'resumed epoch: 1, iter: 2' in log
    final = checkpoint_meta(work_dir / 'epoch_3.pth')
    assert (final['meta']['epoch'], final['meta']['iter']) == (3, 6)
    assert optimizer_steps(final) == {6}  # 2 steps before the kill + 4 after, none repeated
    assert [s['last_step'] for s in final['param_schedulers']] == [6, 6]


def test_resume_without_checkpoint_starts_afresh(demo_workspace, tmp_path):
    _, log = train(demo_workspace, SEG_CONFIG, tmp_path / 'empty',
                   override(SEG_SHORT, 'train_cfg.max_iters=1', 'train_cfg.val_interval=10',
                            'default_hooks.checkpoint.interval=1'), '--resume')
    assert 'no complete checkpoint' in log
    assert (tmp_path / 'empty' / 'iter_1.pth').is_file()


def test_bad_arguments_are_named(demo_workspace, tmp_path):
    code, out = run_tool('train.py', tmp_path / 'nope.py', cwd=demo_workspace, check=False)
    assert code != 0 and 'config file not found' in out
    plain = tmp_path / 'plain.py'
    plain.write_text('model = dict(type="Nothing")\n')
    code, out = run_tool('train.py', plain, cwd=demo_workspace, check=False)
    assert code != 0 and 'default_scope' in out
    # tools/test.py checks its CHECKPOINT before anything else: a FIFO is named as one (one line, exit
    # status 1) before it is opened, which would wait for a writer; a missing file as missing
    # (test_a_checkpoint_that_is_no_file_is_named_as_what_it_is: the same check).
    fifo = tmp_path / 'fifo.pth'
    os.mkfifo(fifo)
    code, out = run_tool('test.py', SEG_CONFIG, fifo, cwd=demo_workspace, check=False, timeout=300)
    assert code == 1 and out.strip().splitlines()[-1] == f'checkpoint {fifo} is a FIFO, not a file'
    if not torch.cuda.is_available():
        code, out = run_tool('train.py', SEG_CONFIG, '--amp', cwd=demo_workspace, check=False)
        assert code != 0 and '--amp' in out and 'on CPU' in out


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU (gloo) path')
def test_two_process_cpu_training_with_dist_train_sh(demo_workspace, tmp_path):
    work_dir = tmp_path / 'dist'
    env = tool_environment(PORT=str(free_port()), PYTHON=sys.executable)
    # Each of the 2 processes takes a batch of 2: the 4 pictures make one iteration per epoch.
    _, log = run_tool('dist_train.sh', DET_CONFIG, '2', '--work-dir', work_dir,
                      '--cfg-options', *override(DET_SHORT, 'train_cfg.max_epochs=2'), cwd=demo_workspace, env=env)
    assert 'distributed backend nccl -> gloo' in log
    assert re.search(r'Epoch\(train\) +\[2\]\[1/1\]', log)
    final = checkpoint_meta(work_dir / 'epoch_2.pth')
    assert final['meta']['iter'] == 2


def test_end_distributed_destroys_the_process_group_the_tools_ran_in(tmp_path):
    """train.py and test.py end a distributed run with it: left to the interpreter's exit, gloo's
    threads can abort a process whose work is done (seen once in CI as a failed two-process run)."""
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        end_distributed()
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    end_distributed()  # and a no-op outside a distributed run


def test_shell_scripts_stop_when_their_python_lacks_mmfocal(tmp_path):
    """tools/python.sh, which every shell script sources, names the interpreter and the fix."""
    python = tmp_path / 'bin' / 'python'  # a Python without mmfocal: nothing on its path but the standard library
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    python.chmod(0o755)
    env = {key: value for key, value in tool_environment(PYTHON=str(python)).items() if key != 'PYTHONPATH'}
    for script, args in (('dist_train.sh', (DET_CONFIG, 1)), ('dist_test.sh', (DET_CONFIG, __file__, 1))):
        code, out = run_tool(script, *args, cwd=tmp_path, env=env, check=False)
        assert code == 1 and last_line(out) == f'{python} cannot import mmfocal: run `make env` (or `pip install -e ' \
            f'{ROOT}`), or set PYTHON', out


# ---------------------------------------------------------------- missing data: one line, the fix

def last_line(output):
    return output.strip().splitlines()[-1]


def test_demo_config_without_demo_data_names_the_command_that_makes_it(tmp_path):
    code, out = run_tool('train.py', DET_CONFIG, '--work-dir', tmp_path / 'work', cwd=tmp_path, check=False)
    assert code != 0 and 'Traceback' not in out
    line = last_line(out)
    assert line.startswith(f'{DET_CONFIG}: train_dataloader.dataset.data_root = data/demo/coco/ (under {tmp_path})')
    assert 'python tools/make_demo_data.py' in line and 'make demo' in line
    assert not (tmp_path / 'work').exists()  # stopped before anything was built


def test_coco_config_without_coco_names_where_mmdet_expects_it_and_the_option_that_moves_it(tmp_path):
    config = os.path.join(DET_CONFIGS, 'mask_rcnn_focal_t_1x.py')
    code, out = run_tool('test.py', config, __file__, '--work-dir', tmp_path / 'work', cwd=tmp_path, check=False)
    assert code != 0 and 'Traceback' not in out
    line = last_line(out)
    assert line.startswith(f'{config}: test_dataloader.dataset.data_root = data/coco/ (under {tmp_path}) '
                           'does not exist')
    assert 'COCO 2017' in line and 'data/coco/' in line
    assert '--cfg-options test_dataloader.dataset.data_root=... (test_evaluator.ann_file too)' in line


def test_dataset_paths_are_checked_below_the_data_root(tmp_path):
    """In process: ADE20K's message, and an annotation file missing from a data root that exists."""
    from mmengine.config import Config

    from mmfocal.cli import check_dataset_paths
    from mmfocal.errors import MissingFileError
    ade_config = os.path.join(SEG_CONFIGS, 'upernet_focal_t_512x512_160k_ade20k.py')
    cfg = Config.fromfile(ade_config)
    with pytest.raises(MissingFileError, match=r'train_dataloader\.dataset\.data_root = data/ade/ADEChallengeData2016 '
                       r'.*ADE20K .*--cfg-options train_dataloader\.dataset\.data_root=\.\.\.'):
        check_dataset_paths(cfg, ade_config)
    (tmp_path / 'images' / 'training').mkdir(parents=True)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    with pytest.raises(MissingFileError, match=r'train_dataloader\.dataset\.data_prefix\.seg_map_path = '
                       + re.escape(str(tmp_path / 'annotations' / 'training'))):
        check_dataset_paths(cfg, ade_config, phases=('train', ))
    (tmp_path / 'annotations' / 'training').mkdir(parents=True)
    check_dataset_paths(cfg, ade_config, phases=('train', ))  # all there: no error


# The one script that does not import mmfocal (tools/setup_env.sh runs it before the package and
# mmcv are installed) raises no package errors.
UNWRAPPED = {'mmcv_wheel_cache.py'}


def test_every_tool_stops_on_the_package_errors_with_one_line():
    """Each script's ``main`` is decorated with mmfocal.cli.exit_on_error."""
    unwrapped = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'tools', '**', '*.py'), recursive=True)):
        if os.path.basename(path) in UNWRAPPED:
            continue
        with open(path) as file:
            (main, ) = [node for node in ast.parse(file.read()).body
                        if isinstance(node, ast.FunctionDef) and node.name == 'main']
        if not any(isinstance(d, ast.Name) and d.id == 'exit_on_error' for d in main.decorator_list):
            unwrapped.append(os.path.relpath(path, ROOT))
    assert unwrapped == []


def test_the_tools_raise_the_package_errors_not_system_exit():
    """Every tool over the package stops through the one error policy, never by itself."""
    stopping = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'tools', '**', '*.py'), recursive=True)):
        if os.path.basename(path) in UNWRAPPED:
            continue
        with open(path) as file:
            for node in ast.walk(ast.parse(file.read())):
                if isinstance(node, ast.Raise) and 'SystemExit' in ast.unparse(node.exc or node):
                    stopping.append(f'{os.path.relpath(path, ROOT)}:{node.lineno}')
    assert stopping == []


def test_a_checkpoint_that_is_no_file_is_named_as_what_it_is(tmp_path):
    """What tools/train.py --resume, tools/test.py and build_model_from_config check first (tools/test.py
    with a FIFO: test_bad_arguments_are_named)."""
    fifo = tmp_path / 'fifo.pth'
    os.mkfifo(fifo)
    (tmp_path / 'folder.pth').mkdir()
    with pytest.raises(MissingFileError, match=f'^checkpoint not found: {tmp_path}/none.pth$'):
        check_checkpoint_file(str(tmp_path / 'none.pth'))
    with pytest.raises(BadArgumentError, match=f'^checkpoint {tmp_path}/folder.pth is a directory, not a file$'):
        check_checkpoint_file(str(tmp_path / 'folder.pth'))
    with pytest.raises(BadArgumentError, match=f'^checkpoint {fifo} is a FIFO, not a file$'):
        check_checkpoint_file(str(fifo))
