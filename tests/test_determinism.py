"""With a fixed seed and randomness.deterministic=True, two CPU training runs of the demo detector
log the same losses, iteration by iteration: a result can be reproduced, and a bug bisected.

The runs are two separate ``tools/train.py`` processes, started side by side, of
configs/det/mask_rcnn_focal_t_demo.py on freshly made demo data (with a data-loading worker,
random flips and the from-scratch initialisation all in play).
"""
import glob
import json
import os.path as osp
import subprocess

from .helpers import DET_DEMO_CONFIG as CONFIG
from .helpers import ROOT, make_demo_data, tool_command, tool_environment

ITERATIONS = 3
BATCH_SIZE = 2


def logged_losses(work_dir):
    """Every loss, accuracy and gradient norm the LoggerHook wrote to the run's scalars.json, per iteration."""
    (scalars, ) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as file:
        records = [json.loads(line) for line in file if line.strip()]
    return [{key: value for key, value in record.items() if key.startswith(('loss', 'acc', 'grad_norm'))}
            for record in records if 'loss' in record]


def test_two_seeded_deterministic_cpu_runs_log_identical_losses(tmp_path):
    data = tmp_path / 'demo'
    # Its own data: more training pictures, at the default scale, than the session's demo workspace.
    make_demo_data(str(data), '--det-train', str(ITERATIONS * BATCH_SIZE), '--det-val', '1', '--seg-train', '1',
                   '--seg-val', '1')
    options = [
        'randomness.seed=0', 'randomness.deterministic=True',
        f'train_dataloader.dataset.data_root={data}/coco/', f'train_dataloader.batch_size={BATCH_SIZE}',
        'train_dataloader.sampler.shuffle=True',
        'train_cfg.max_epochs=1', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.logger.interval=1',
    ]
    runs = [subprocess.Popen(tool_command('train.py', CONFIG, '--work-dir', tmp_path / f'run{i}', '--cfg-options',
                                          *options),
                             env=tool_environment(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
            for i in range(2)]
    outputs = [run.communicate()[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]

    first, second = (logged_losses(str(tmp_path / f'run{i}')) for i in range(2))
    assert len(first) == ITERATIONS and all('loss_mask' in losses for losses in first), first
    assert first == second
    # The losses move from one iteration to the next: the runs really trained, on different batches.
    assert len({losses['loss'] for losses in first}) == ITERATIONS
