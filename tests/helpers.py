"""Test scaffolding, defined once: paths, the tool runner, tiny backbones and configs shrunk to
test size. Fixtures built on these (the demo data, made once per run) are in conftest.py."""
import copy
import os
import os.path as osp
import subprocess
import sys
from typing import Optional, Sequence, Tuple

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
CONFIGS = osp.join(ROOT, 'configs')
DET_CONFIGS = osp.join(CONFIGS, 'det')
SEG_CONFIGS = osp.join(CONFIGS, 'seg')
DET_DEMO_CONFIG = osp.join(DET_CONFIGS, 'mask_rcnn_focal_t_demo.py')
SEG_DEMO_CONFIG = osp.join(SEG_CONFIGS, 'upernet_focal_t_demo.py')

# A one-block-per-stage, 32-channel backbone for configs at test size; 16 channels for unit tests.
TINY_BACKBONE = dict(arch=None, embed_dims=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), init_cfg=None)
TINY_CHANNELS = [32, 64, 128, 256]
TINY = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), drop_path_rate=0.)
SCALE_DIVISOR = 8  # the CPU tests shrink every resize scale and crop size by this factor

# Data loading in the main process: a few small pictures need no workers.
IN_PROCESS = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
              for key in ('num_workers=0', 'persistent_workers=False')]


def tool_environment(**extra) -> dict:
    """The environment tools run in: this checkout first on the path (whatever is installed),
    one thread per process (tests run beside each other), no warnings in the output."""
    env = dict(os.environ, PYTHONWARNINGS='ignore', **extra)
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def run_tool(script: str, *args, cwd: Optional[str] = None, check: bool = True, timeout: float = 1200,
             env: Optional[dict] = None) -> Tuple[int, str]:
    """Run ``tools/<script>`` (or any path) with ``args``; return (exit code, stdout + stderr).

    A failure (when ``check``) fails the test with the end of the output. ``timeout`` is a
    deadline against a hung tool, not a speed limit.
    """
    path = script if osp.isabs(script) else osp.join(TOOLS, script)
    command = [sys.executable, path, *map(str, args)] if path.endswith('.py') else ['bash', path, *map(str, args)]
    result = subprocess.run(command, cwd=cwd or ROOT, env=env or tool_environment(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(command[:3])} exited with {result.returncode}:\n{output[-6000:]}')
    return result.returncode, output


def make_demo_data(out: str, *options: str) -> None:
    """tools/make_demo_data.py into ``out`` (options such as '--scale', '96', '--det-train', '4')."""
    run_tool('make_demo_data.py', '--out', out, *options)


def override(options: Sequence[str], *changes: str) -> list:
    """--cfg-options ``options`` with each KEY=VALUE of ``changes`` replacing (or adding) its key."""
    keys = {change.split('=')[0] for change in changes}
    return [o for o in options if o.split('=')[0] not in keys] + list(changes)


def shrink_backbone(cfg, backbone: Optional[dict] = None):
    """A copy of ``cfg`` whose model has the tiny backbone (or ``backbone``'s settings) and the
    neck / decode and auxiliary heads' input channels to match; no pretrained checkpoint."""
    cfg = copy.deepcopy(cfg)
    settings = dict(TINY_BACKBONE, **(backbone or {}))
    model = cfg.model
    model.backbone.update(settings)
    channels = [settings['embed_dims'] * 2**i for i in range(len(settings['depths']))]
    out_indices = model.backbone.get('out_indices', tuple(range(len(channels))))
    if 'neck' in model:
        necks = model.neck if isinstance(model.neck, list) else [model.neck]
        necks[0].in_channels = [channels[i] for i in out_indices]
    if 'decode_head' in model:
        model.decode_head.in_channels = [channels[i] for i in out_indices]
    if 'auxiliary_head' in model:
        index = model.auxiliary_head.in_index
        model.auxiliary_head.in_channels = channels[out_indices[index]]
    return cfg


def shrink_scales(pipeline):
    """Divide every resize scale and crop size of a data pipeline (in place) by SCALE_DIVISOR."""
    for transform in pipeline:
        for key in ('scale', 'crop_size'):
            if isinstance(transform.get(key), (tuple, list)) and all(isinstance(s, int) for s in transform[key]):
                transform[key] = tuple(s // SCALE_DIVISOR for s in transform[key])
            elif isinstance(transform.get(key), list):  # RandomResize's range: [(w, h), (w, h)]
                transform[key] = [tuple(s // SCALE_DIVISOR for s in scale) for scale in transform[key]]
        if 'scales' in transform:
            transform['scales'] = [tuple(s // SCALE_DIVISOR for s in scale) for scale in transform['scales']]
        for nested in ('transforms', ):
            for group in transform.get(nested, []):
                shrink_scales(group if isinstance(group, list) else [group])
    return pipeline
