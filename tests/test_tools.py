"""tools/train.py, tools/test.py and tools/dist_train.sh, run for real on the demo configs.

Each test trains the demo detector or segmenter for a few iterations on a tiny demo data set
made in the test's folder (the demo configs' data paths are relative, so the tools run there),
then checks what the tools wrote and printed.
"""
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
DET_CONFIG = osp.join(ROOT, 'configs', 'det', 'mask_rcnn_focal_t_demo.py')
SEG_CONFIG = osp.join(ROOT, 'configs', 'seg', 'upernet_focal_t_demo.py')

# Data loading in the main process: a few small pictures need no workers.
IN_PROCESS = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                              'test_dataloader')
              for key in ('num_workers=0', 'persistent_workers=False')]
# A few iterations of small pictures; validation and logging every epoch / few iterations.
DET_SHORT = IN_PROCESS + [
    'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']
SEG_SHORT = IN_PROCESS + [
    'train_dataloader.batch_size=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
    'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']


def override(options, *changes):
    """options with each KEY=VALUE of changes replacing (or adding) its key."""
    keys = {change.split('=')[0] for change in changes}
    return [o for o in options if o.split('=')[0] not in keys] + list(changes)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder holding data/demo with 4 training and 2 validation pictures per task."""
    root = tmp_path_factory.mktemp('tools')
    subprocess.run([sys.executable, osp.join(TOOLS, 'make_demo_data.py'),
                    '--out', str(root / 'data' / 'demo'), '--scale', '96',
                    '--det-train', '4', '--det-val', '2', '--seg-train', '4', '--seg-val', '2'],
                   check=True, capture_output=True)
    return root


def environment():
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def run_tool(workspace, *args, check=True):
    result = subprocess.run([sys.executable, *args], cwd=workspace, env=environment(),
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(args[:2])} exited with {result.returncode}:\n{output[-6000:]}')
    return result.returncode, output


def train(workspace, config, work_dir, options, *extra, check=True):
    return run_tool(workspace, osp.join(TOOLS, 'train.py'), config, '--work-dir', str(work_dir),
                    *extra, '--cfg-options', *options, check=check)


def checkpoint_meta(path):
    # mmfocal (imported by the tools and here through the configs' custom_imports) makes
    # mmengine checkpoints loadable with torch's weights_only default.
    import mmfocal  # noqa: F401
    return torch.load(path, map_location='cpu')


def optimizer_steps(checkpoint):
    states = checkpoint['optimizer']['state'].values()
    return {int(state['step']) for state in states}


def test_detector_trains_tests_and_draws(workspace, tmp_path):
    work_dir = tmp_path / 'det'
    _, log = train(workspace, DET_CONFIG, work_dir, DET_SHORT)
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()
    assert re.search(r'Epoch\(train\) +\[1\]\[2/2\].*eta:', log)  # progress with ETA
    assert 'coco/bbox_mAP' in log  # validation ran

    show_dir = tmp_path / 'drawn'
    pickle_file = tmp_path / 'predictions.pkl'
    _, out = run_tool(workspace, osp.join(TOOLS, 'test.py'), DET_CONFIG, str(checkpoint),
                      '--work-dir', str(tmp_path / 'det_test'), '--show-dir', str(show_dir),
                      '--out', str(pickle_file))
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert re.search(rf'^  {key}: -?[0-9.]+$', out, re.M), key
    drawn = sorted(os.listdir(show_dir))
    assert drawn == ['000000.png', '000001.png']  # one PNG per validation picture
    assert pickle_file.is_file()


def test_detector_tta_refuses_masks_clearly(workspace, tmp_path):
    code, out = run_tool(workspace, osp.join(TOOLS, 'test.py'), DET_CONFIG, __file__, '--tta',
                         check=False)
    assert code != 0 and f'--tta: {DET_CONFIG} predicts instance masks' in out and 'merges boxes only' in out


def test_segmenter_trains_tests_with_tta_and_resumes_from_a_path(workspace, tmp_path):
    work_dir = tmp_path / 'seg'
    _, log = train(workspace, SEG_CONFIG, work_dir, SEG_SHORT)
    assert (work_dir / 'iter_2.pth').is_file()
    assert re.search(r'Iter\(train\) +\[2/2\]', log) and 'mIoU' in log

    for extra in ([], ['--tta']):
        _, out = run_tool(workspace, osp.join(TOOLS, 'test.py'), SEG_CONFIG,
                          str(work_dir / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
                          '--show-dir', str(tmp_path / 'drawn'), *extra,
                          '--cfg-options', 'default_hooks.visualization.interval=1')
        for key in ('aAcc', 'mIoU', 'mAcc'):
            assert re.search(rf'^  {key}: [0-9.]+$', out, re.M), (extra, key)
    assert sorted(os.listdir(tmp_path / 'drawn')) == ['ADE_val_00000000.png',
                                                      'ADE_val_00000001.png']

    # --resume CHECKPOINT continues that run: iteration, optimizer and schedule.
    _, log = train(workspace, SEG_CONFIG, work_dir, override(SEG_SHORT, 'train_cfg.max_iters=4'),
                   '--resume', str(work_dir / 'iter_2.pth'))
    assert 'resumed epoch: 0, iter: 2' in log
    final = checkpoint_meta(work_dir / 'iter_4.pth')
    assert final['meta']['iter'] == 4
    assert optimizer_steps(final) == {4}


def test_resume_after_kill_mid_epoch(workspace, tmp_path):
    """Killed during its second epoch, a run resumed with a bare --resume starts from its
    newest complete checkpoint, with the optimizer and schedule where they were."""
    work_dir = tmp_path / 'det'
    options = override(DET_SHORT, 'train_cfg.max_epochs=3', 'train_cfg.val_interval=10')
    process = subprocess.Popen(
        [sys.executable, osp.join(TOOLS, 'train.py'), DET_CONFIG, '--work-dir', str(work_dir),
         '--cfg-options', *options],
        cwd=workspace, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
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

    _, log = train(workspace, DET_CONFIG, work_dir, options, '--resume')
    assert 'resumed epoch: 1, iter: 2' in log
    final = checkpoint_meta(work_dir / 'epoch_3.pth')
    assert (final['meta']['epoch'], final['meta']['iter']) == (3, 6)
    assert optimizer_steps(final) == {6}  # 2 steps before the kill + 4 after, none repeated
    assert [s['last_step'] for s in final['param_schedulers']] == [6, 6]


def test_resume_without_checkpoint_starts_afresh(workspace, tmp_path):
    _, log = train(workspace, SEG_CONFIG, tmp_path / 'empty',
                   override(SEG_SHORT, 'train_cfg.max_iters=1', 'train_cfg.val_interval=10',
                            'default_hooks.checkpoint.interval=1'), '--resume')
    assert 'no complete checkpoint' in log
    assert (tmp_path / 'empty' / 'iter_1.pth').is_file()


def test_bad_arguments_are_named(workspace, tmp_path):
    code, out = run_tool(workspace, osp.join(TOOLS, 'train.py'), str(tmp_path / 'nope.py'),
                         check=False)
    assert code != 0 and 'config file not found' in out
    plain = tmp_path / 'plain.py'
    plain.write_text('model = dict(type="Nothing")\n')
    code, out = run_tool(workspace, osp.join(TOOLS, 'train.py'), str(plain), check=False)
    assert code != 0 and 'default_scope' in out
    code, out = run_tool(workspace, osp.join(TOOLS, 'test.py'), SEG_CONFIG,
                         str(tmp_path / 'missing.pth'), check=False)
    assert code != 0 and 'checkpoint not found' in out
    if not torch.cuda.is_available():
        code, out = run_tool(workspace, osp.join(TOOLS, 'train.py'), SEG_CONFIG, '--amp',
                             check=False)
        assert code != 0 and '--amp' in out and 'on CPU' in out


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU (gloo) path')
def test_two_process_cpu_training_with_dist_train_sh(workspace, tmp_path):
    work_dir = tmp_path / 'dist'
    env = dict(environment(), PORT=str(free_port()), PYTHON=sys.executable)
    # Each of the 2 processes takes a batch of 2: the 4 pictures make one iteration per epoch.
    result = subprocess.run(
        ['bash', osp.join(TOOLS, 'dist_train.sh'), DET_CONFIG, '2', '--work-dir', str(work_dir),
         '--cfg-options', *override(DET_SHORT, 'train_cfg.max_epochs=2')],
        cwd=workspace, env=env, capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert 'distributed backend nccl -> gloo' in log
    assert re.search(r'Epoch\(train\) +\[2\]\[1/1\]', log)
    final = checkpoint_meta(work_dir / 'epoch_2.pth')
    assert final['meta']['iter'] == 2
