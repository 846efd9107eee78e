"""A training run killed (SIGKILL) and resumed with ``tools/train.py --resume`` ends where the
uninterrupted run ends: same weights, same optimizer state, same logged losses, bit for bit
(CPU, deterministic mode), because ExactResumeHook carries every process's random states and the
data position through the checkpoint.

The runs are real tool runs of the demo configs with a tiny backbone on the demo data, a few
iterations each; the kills are real (SIGKILL from a hook, at the end of a chosen iteration). The
uninterrupted runs are shared between the tests of a family through module fixtures.
"""
import glob
import json
import os.path as osp
import signal
import sys

import pytest
import torch

from mmfocal.engine.exact_resume import STATE_KEY
from mmfocal.engine.safe_load import load_checkpoint_file  # training checkpoints hold numpy: loaded as data

from .helpers import (
    DET_DEMO_CONFIG,
    SEG_DEMO_CONFIG,
    TINY_BACKBONE,
    free_port,
    linear_regression_runner,
    override,
    run_tool,
    tool_environment,
    write_config,
)

DETERMINISTIC = ['randomness.seed=0', 'randomness.deterministic=True', 'default_hooks.logger.interval=1',
                 'default_hooks.checkpoint.max_keep_ckpts=-1', 'train_dataloader.batch_size=2']
# 6 iterations, a checkpoint every 2, validation after the 4th (between a checkpoint and the next
# iteration: the uninterrupted run validates there, the run resumed from that checkpoint does not)
# and the 6th; the demo's data worker.
SEG = DETERMINISTIC + ['train_cfg.max_iters=6', 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=2']
# 2 epochs of 2 iterations (4 pictures), a checkpoint and validation after each; the demo's
# persistent data worker.
DET = DETERMINISTIC + ['train_cfg.max_epochs=2', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1']
NOT_EXACT = 'not exactly as the interrupted run'
TIMING = ('time', 'data_time', 'eta', 'memory')


def config_for(tmp_path, base):
    """The demo config with the tiny backbone and the SIGKILL hook (off unless its iteration is set)."""
    return write_config(tmp_path / f'tiny_{osp.basename(base)}', base,
                        model=dict(backbone=dict(TINY_BACKBONE)),
                        custom_imports=dict(imports=['mmfocal', 'tests.helpers'], allow_failed_imports=False),
                        custom_hooks=[dict(type='SigkillAfterIteration', iteration=0)])


def train(workspace, config, work_dir, options, *extra, kill_after=0):
    """tools/train.py; with ``kill_after``, the run must die by SIGKILL after that iteration."""
    code, log = run_tool('train.py', config, '--work-dir', work_dir, *extra, '--cfg-options', *options,
                         f'custom_hooks.0.iteration={kill_after}', cwd=workspace, check=not kill_after)
    if kill_after:
        assert code == -signal.SIGKILL, log[-3000:]
    return log


def logged(work_dir):
    """{iteration: every logged value but timings} over all the runs in ``work_dir``; an iteration
    that a resumed run trained again must have been logged the same both times."""
    values = {}
    for scalars in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(scalars) as file:
            for record in map(json.loads, filter(str.strip, file)):
                if 'loss' not in record:
                    continue
                record = {key: value for key, value in record.items() if key not in TIMING}
                assert values.setdefault(record['iter'], record) == record, (scalars, record['iter'])
    return values


def load(path):
    return load_checkpoint_file(str(path), map_location='cpu')


def differences(first, second, where=''):
    """Where two checkpoint parts (nested dicts / lists of tensors and numbers) are not identical."""
    if isinstance(first, dict):
        assert first.keys() == second.keys(), where
        return [d for key in first for d in differences(first[key], second[key], f'{where}.{key}')]
    if isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        return [d for i, (a, b) in enumerate(zip(first, second)) for d in differences(a, b, f'{where}[{i}]')]
    if isinstance(first, torch.Tensor):
        return [] if torch.equal(first, second) else [where]
    return [] if first == second else [where]


def assert_same_training_state(expected_path, actual_path):
    expected, actual = load(expected_path), load(actual_path)
    assert expected['meta']['iter'] == actual['meta']['iter']
    assert differences(expected['state_dict'], actual['state_dict'], 'state_dict') == []
    assert differences(expected['optimizer'], actual['optimizer'], 'optimizer') == []
    assert differences(expected['param_schedulers'], actual['param_schedulers'], 'param_schedulers') == []


# --- Iteration-based: the segmenter --------------------------------------------------------------

@pytest.fixture(scope='module')
def seg(demo_workspace, tmp_path_factory):
    """The uninterrupted run, and one killed between checkpoints (after iteration 3), resumed,
    killed right after its checkpoint at iteration 4, and resumed again to the end."""
    root = tmp_path_factory.mktemp('seg')
    config = config_for(root, SEG_DEMO_CONFIG)
    train(demo_workspace, config, root / 'straight', SEG)
    killed = root / 'killed'
    train(demo_workspace, config, killed, SEG, kill_after=3)
    first_resume = train(demo_workspace, config, killed, SEG, '--resume', kill_after=4)
    second_resume = train(demo_workspace, config, killed, SEG, '--resume')
    return dict(root=root, config=config, straight=root / 'straight', killed=killed,
                logs=[first_resume, second_resume])


def test_segmenter_killed_between_and_after_checkpoints_ends_as_the_uninterrupted_run(seg):
    assert 'resumed epoch: 0, iter: 2' in seg['logs'][0] and 'resumed epoch: 0, iter: 4' in seg['logs'][1]
    assert not any(NOT_EXACT in log for log in seg['logs'])
    assert_same_training_state(seg['straight'] / 'iter_6.pth', seg['killed'] / 'iter_6.pth')
    straight, resumed = logged(seg['straight']), logged(seg['killed'])
    assert sorted(straight) == list(range(1, 7)) and resumed == straight
    assert len({record['loss'] for record in straight.values()}) == 6  # it trained, on different batches


def test_segmenter_checkpoint_state_loads_as_plain_tensors(seg):
    checkpoint = load(seg['killed'] / 'iter_2.pth')
    state = checkpoint[STATE_KEY]
    assert state['world_size'] == 1 and state['ranks'][0]['iteration'] == checkpoint['meta']['iter'] == 2
    # Only tensors, numbers, strings and containers: loadable without any allow-list.
    buffer = osp.join(seg['root'], 'state_only.pth')
    torch.save(state, buffer)
    assert torch.load(buffer, weights_only=True).keys() == state.keys()  # torch's own weights-only loader, any torch


def test_segmenter_resumed_without_the_restore_differs(seg, demo_workspace):
    """The comparison above can fail: the same resume with the random states left alone differs."""
    work_dir = seg['root'] / 'inexact'
    log = train(demo_workspace, seg['config'], work_dir, SEG, '--resume', seg['killed'] / 'iter_2.pth',
                '--no-exact-resume')
    assert 'resumed epoch: 0, iter: 2' in log
    straight, inexact = (load(path)['state_dict'] for path in (seg['straight'] / 'iter_6.pth', work_dir / 'iter_6.pth'))
    assert differences(straight, inexact), 'resuming without the random states gave the same weights'
    assert logged(work_dir)[3]['loss'] != logged(seg['straight'])[3]['loss']


def test_checkpoint_without_the_state_resumes_with_one_warning(seg, demo_workspace):
    """A checkpoint written without the hook (by --no-exact-resume here, or an older mmfocal)."""
    old = seg['root'] / 'inexact' / 'iter_4.pth'
    assert STATE_KEY not in load(old)
    work_dir = seg['root'] / 'from_old'
    log = train(demo_workspace, seg['config'], work_dir, SEG, '--resume', old)
    assert log.count(NOT_EXACT) == 1 and 'has no exact-resume state' in log
    assert load(work_dir / 'iter_6.pth')['meta']['iter'] == 6


def _malformed(state):
    """Exact-resume entries a damaged or hand-made checkpoint may carry, each broken differently."""
    rank = state['ranks'][0]
    return dict(
        no_world_size={k: v for k, v in state.items() if k != 'world_size'},  # KeyError
        no_ranks=dict(state, ranks=[]),  # IndexError
        not_a_dict='exact',  # TypeError
        bad_generator=dict(state, ranks=[dict(rank, torch=rank['torch'][:10])]),  # torch refuses it (RuntimeError)
        bad_numpy=dict(state, ranks=[dict(rank, numpy_keys=rank['numpy_keys'][:5])]),  # numpy refuses it (ValueError)
    )


def test_malformed_exact_resume_entry_resumes_with_one_warning(tmp_path):
    """In this process, with a one-layer model: an entry the hook cannot use is the promised
    warning, and training goes on, never a KeyError (or a failure later, when it is put back)."""
    from mmfocal.engine.exact_resume import ExactResumeHook
    linear_regression_runner(tmp_path / 'whole', 1, 'exact_whole', custom_hooks=[ExactResumeHook()]).train()
    checkpoint = load(tmp_path / 'whole' / 'epoch_1.pth')
    for name, entry in _malformed(checkpoint[STATE_KEY]).items():
        damaged = tmp_path / f'{name}.pth'
        torch.save(dict(checkpoint, **{STATE_KEY: entry}), damaged)
        work_dir = tmp_path / name
        runner = linear_regression_runner(work_dir, 2, f'exact_{name}', custom_hooks=[ExactResumeHook()],
                                          resume=True, load_from=str(damaged))
        runner.train()
        assert runner.train_loop.epoch == 2 and load(work_dir / 'epoch_2.pth')['meta']['iter'] == 4
        (log_file, ) = glob.glob(str(work_dir / '*' / '*.log'))
        with open(log_file) as file:
            log = file.read()
        assert log.count(NOT_EXACT) == 1 and "exact-resume state (exact_resume) is malformed" in log, name


# --- Epoch-based: the detector -------------------------------------------------------------------

def test_detector_killed_mid_epoch_ends_as_the_uninterrupted_run(demo_workspace, tmp_path):
    """Killed in the middle of epoch 2 with only epoch checkpoints, the resume trains epoch 2 again
    from its start, exactly; that run, now writing a checkpoint every iteration (CheckpointHook
    by_epoch=False), is killed in the middle of epoch 2 again, and its resume skips the batch of
    the epoch already trained instead of training the epoch again."""
    config = config_for(tmp_path, DET_DEMO_CONFIG)
    train(demo_workspace, config, tmp_path / 'straight', DET)
    killed = tmp_path / 'killed'
    train(demo_workspace, config, killed, DET, kill_after=3)  # after the first batch of epoch 2
    every_iteration = DET + ['default_hooks.checkpoint.by_epoch=False']
    logs = [train(demo_workspace, config, killed, every_iteration, '--resume', kill_after=3),
            train(demo_workspace, config, killed, every_iteration, '--resume')]
    assert 'resumed epoch: 1, iter: 2' in logs[0] and 'resumed epoch: 1, iter: 3' in logs[1]
    assert not any(NOT_EXACT in log for log in logs)
    assert_same_training_state(tmp_path / 'straight' / 'epoch_2.pth', killed / 'iter_4.pth')
    straight = logged(tmp_path / 'straight')
    assert sorted(straight) == [1, 2, 3, 4] and logged(killed) == straight  # iteration 3 logged twice, the same


# --- Two processes (gloo) ------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) path')
def test_two_processes_killed_and_resumed_end_as_the_uninterrupted_run(demo_workspace, tmp_path):
    config = config_for(tmp_path, SEG_DEMO_CONFIG)
    # Each process its own random streams (diff_rank_seed), so restoring rank 0's state on both
    # would not do; data loading in the processes themselves.
    options = override(SEG, 'train_cfg.max_iters=4', 'train_cfg.val_interval=10',
                       'randomness.diff_rank_seed=True', 'train_dataloader.num_workers=0', 'val_cfg=None',
                       'val_dataloader=None', 'val_evaluator=None',
                       'train_dataloader.persistent_workers=False')

    def dist_train(work_dir, *extra, kill_after=0):
        env = tool_environment(PORT=str(free_port()), PYTHON=sys.executable)
        code, log = run_tool('dist_train.sh', config, '2', '--work-dir', work_dir, *extra, '--cfg-options',
                             *options, f'custom_hooks.0.iteration={kill_after}', cwd=demo_workspace,
                             env=env, check=not kill_after)
        assert code != 0 if kill_after else code == 0, log[-3000:]
        return log

    dist_train(tmp_path / 'straight')
    dist_train(tmp_path / 'killed', kill_after=3)
    log = dist_train(tmp_path / 'killed', '--resume')
    assert 'resumed epoch: 0, iter: 2' in log and NOT_EXACT not in log
    ranks = load(tmp_path / 'killed' / 'iter_2.pth')[STATE_KEY]['ranks']
    assert len(ranks) == 2 and not torch.equal(ranks[0]['torch'], ranks[1]['torch'])
    assert_same_training_state(tmp_path / 'straight' / 'iter_4.pth', tmp_path / 'killed' / 'iter_4.pth')
    assert logged(tmp_path / 'killed') == logged(tmp_path / 'straight')


# --- A classifier (mmpretrain config): Mixup / CutMix and RandAugment draw from the streams too ----

def test_classifier_killed_mid_epoch_ends_as_the_uninterrupted_run(trained_classifier, imagenet_workspace, tmp_path):
    """The tiny configs/cls/focal_t_in1k.py run of conftest (2 epochs of 2 iterations, checkpoints
    every epoch), killed after the first batch of epoch 2 and resumed, ends as that run."""
    straight, config = trained_classifier['work_dir'], trained_classifier['config']
    killed = tmp_path / 'killed'
    train(imagenet_workspace, config, killed, [], kill_after=3)
    log = train(imagenet_workspace, config, killed, [], '--resume')
    assert 'resumed epoch: 1, iter: 2' in log and NOT_EXACT not in log
    assert_same_training_state(straight / 'epoch_2.pth', killed / 'epoch_2.pth')
    expected = logged(straight)
    assert sorted(expected) == [1, 2, 3, 4] and logged(killed) == expected
    assert len({record['loss'] for record in expected.values()}) == 4
