"""Test scaffolding, defined once: paths, the tool runner, tiny backbones and configs shrunk to
test size. Fixtures built on these (the demo data, made once per run) are in conftest.py."""
import contextlib
import copy
import importlib.util
import json
import multiprocessing
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Optional, Sequence, Tuple

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS
from torch.utils.data import Dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
CONFIGS = osp.join(ROOT, 'configs')
DET_CONFIGS = osp.join(CONFIGS, 'det')
SEG_CONFIGS = osp.join(CONFIGS, 'seg')
DET_DEMO_CONFIG = osp.join(DET_CONFIGS, 'mask_rcnn_focal_t_demo.py')
SEG_DEMO_CONFIG = osp.join(SEG_CONFIGS, 'upernet_focal_t_demo.py')
CLS_CONFIGS = osp.join(CONFIGS, 'cls')
CLS_CONFIG = osp.join(CLS_CONFIGS, 'focal_t_in1k.py')

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


def tool_command(script: str, *args) -> list:
    """The command line that runs ``tools/<script>`` (or any path): Python for .py, else bash."""
    path = str(script) if osp.isabs(str(script)) else osp.join(TOOLS, script)
    return [sys.executable, path, *map(str, args)] if path.endswith('.py') else ['bash', path, *map(str, args)]


def load_script(path: str, module_name: str):
    """The script at ``path`` imported as a module named ``module_name`` (scripts are no package)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tool(name: str):
    """``tools/<name>.py`` imported as a module."""
    return load_script(osp.join(TOOLS, f'{name}.py'), f'tools_{name}')


def run_tool(script: str, *args, cwd: Optional[str] = None, check: bool = True, timeout: float = 1200,
             env: Optional[dict] = None) -> Tuple[int, str]:
    """Run ``tools/<script>`` (or any path) with ``args``; return (exit code, stdout + stderr).

    A failure (when ``check``) fails the test with the end of the output. ``timeout`` is a
    deadline against a hung tool, not a speed limit.
    """
    command = tool_command(script, *args)
    result = subprocess.run(command, cwd=cwd or ROOT, env=env or tool_environment(), capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(command[:3])} exited with {result.returncode}:\n{output[-6000:]}')
    return result.returncode, output


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for a distributed run's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


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


def shrink_scales(pipeline, divisor: int = SCALE_DIVISOR):
    """Divide every resize scale and crop size of a data pipeline (in place) by ``divisor``."""
    for transform in pipeline:
        for key in ('scale', 'crop_size'):
            if isinstance(transform.get(key), (tuple, list)) and all(isinstance(s, int) for s in transform[key]):
                transform[key] = tuple(s // divisor for s in transform[key])
            elif isinstance(transform.get(key), list):  # RandomResize's range: [(w, h), (w, h)]
                transform[key] = [tuple(s // divisor for s in scale) for scale in transform[key]]
        if 'scales' in transform:
            transform['scales'] = [tuple(s // divisor for s in scale) for scale in transform['scales']]
        for nested in ('transforms', ):
            for group in transform.get(nested, []):
                shrink_scales(group if isinstance(group, list) else [group], divisor)
    return pipeline


def write_config(path, base: str, **entries) -> str:
    """A config file at ``path`` that inherits ``base`` and sets ``entries`` (plain Python values),
    for what --cfg-options cannot say (lists of dicts such as ``custom_hooks``). Returns the path."""
    lines = [f'_base_ = [{base!r}]'] + [f'{key} = {value!r}' for key, value in entries.items()]
    with open(path, 'w') as file:
        file.write('\n'.join(lines) + '\n')
    return str(path)


# The official mini classifiers' sizes (tests/data/mini_cls.pt.xz, mini_fast_cls.pt.xz), which are the
# demo backbone's: a classifier of this size loads their weights, and its backbone goes into the demo
# detector's and segmenter's.
MINI_CLASSIFIER = dict(arch=None, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
MINI_CLASSES = 10


def make_image_folder(root: str, num_classes: int = MINI_CLASSES, per_class: Optional[dict] = None,
                      size: Tuple[int, int] = (40, 48)) -> str:
    """A small ImageNet in ImageNet's layout under ``root``: ``{split}/<class>/<class>_<i>.JPEG``
    (random pictures of ``size`` (h, w)) and ``meta/{split}.txt`` ("<class>/<file> <label>" lines),
    as mmpretrain's ImageNet dataset reads it; ``per_class`` pictures per split (train 1, val 1)."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, count in (per_class or dict(train=1, val=1)).items():
        lines = []
        for label in range(num_classes):
            name = f'n{label:08d}'
            os.makedirs(osp.join(root, split, name), exist_ok=True)
            for index in range(count):
                file = f'{name}/{name}_{index}.JPEG'
                cv2.imwrite(osp.join(root, split, file), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                lines.append(f'{file} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as file:
            file.writelines(lines)
    return root


def tiny_classifier_config(path, data_root: str, base: str = CLS_CONFIG, backbone: Optional[dict] = None,
                           **entries) -> str:
    """``base`` (configs/cls/) with the mini classifier's sizes (or ``backbone``'s settings), its
    10-class head, ``data_root`` (a :func:`make_image_folder`) for every split, 4 pictures a batch,
    data loading in the process, 2 epochs (1 of warm-up), a checkpoint every epoch, logging every iteration, and
    ``entries`` (top-level keys); written to ``path`` as a config of its own. Returns the path."""
    from mmengine.config import Config
    cfg = Config.fromfile(base)
    cfg.model.backbone.update(dict(MINI_CLASSIFIER, **(backbone or {})))
    cfg.model.head.update(num_classes=MINI_CLASSES, in_channels=MINI_CLASSIFIER['embed_dims'] * 8)
    cfg.data_preprocessor.num_classes = MINI_CLASSES
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        if loader is None:  # a config without validation (ImageNet-22K)
            continue
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data_root
    cfg.train_cfg.max_epochs = 2
    warm_up, decay = cfg.param_scheduler  # 1 warm-up epoch, then the cosine
    warm_up.end = decay.begin = 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=-1)
    cfg.merge_from_dict(entries)
    cfg.dump(str(path))
    return str(path)


class LinearRegression(BaseModel):
    """A model small enough to train in a test in no time: one linear layer (2 -> 1), squared error."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        outputs = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((outputs - torch.stack(targets)) ** 2).mean())
        return outputs


class Points(Dataset):
    """4 points (i, 1) with targets 2i, for :class:`LinearRegression`."""

    metainfo = dict(classes=('point', ))

    def __len__(self):
        return 4

    def __getitem__(self, index):
        point = torch.tensor([float(index), 1.0])
        return dict(inputs=point, targets=point[:1] * 2)


def linear_regression_runner(work_dir, max_epochs: int, experiment_name: str, **options):
    """An mmengine Runner training :class:`LinearRegression` on :class:`Points` (2 iterations an
    epoch) for ``max_epochs``, with a checkpoint after each epoch in ``work_dir``; ``options`` go
    to the Runner (``resume``, ``load_from``, ``custom_hooks``). ``experiment_name`` names its
    logger, unique in a process."""
    from mmengine.runner import Runner
    return Runner(model=LinearRegression(), work_dir=str(work_dir),
                  train_dataloader=dict(dataset=Points(), sampler=dict(type='DefaultSampler', shuffle=False),
                                        batch_size=2, num_workers=0),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
                  default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
                  randomness=dict(seed=0), experiment_name=experiment_name, **options)


class SigkillAfterIteration(Hook):
    """Kill the training process and its data workers with SIGKILL (no cleanup, as a preempted job
    dies) at the end of iteration ``iteration`` (counted from 1; 0 never), after CheckpointHook has
    saved, if it saves there. (A worker left alone would outlive its parent, and keep the tool's
    output open.) A tool run gets it from a config with
    ``custom_imports=dict(imports=['mmfocal', 'tests.helpers'])`` and
    ``custom_hooks=[dict(type='SigkillAfterIteration', iteration=N)]``."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def __init__(self, iteration: int = 0):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


HOOKS.register_module(module=SigkillAfterIteration, force=True)


# ---------------------------------------------------------------------------------------------
# Malicious pickles: unpickled without a check, each creates its ``marker`` file

class RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class RunsPythonCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").write("ran")', )


# payload name: (class, the global its pickle names)
PAYLOADS = {'os.system': (RunsShellCommand, 'posix.system'), 'exec': (RunsPythonCode, 'builtins.exec')}


# ---------------------------------------------------------------------------------------------
# Attention blocks against their straightforward (float64) implementations, for both backbones

ATTENTION_PATHS = ('cpu', 'cpu, one window per chunk', 'other devices', 'autograd (attention dropout)',
                   'standard ops')
# The device of the tests that take the ``device`` fixture (conftest.py): cpu unless set.
TEST_DEVICE = os.environ.get('MMFOCAL_TEST_DEVICE', 'cpu')


class DropNothing(torch.nn.Identity):
    """An attention dropout with p > 0 that drops nothing: selects the autograd path, keeps the math."""
    p = 0.5


def with_large_weights(model):
    """``model`` (seeded before it was built) with every weight but the norms' drawn at std 0.3, large
    enough that the attention branch dominates each block's output."""
    for name, p in model.named_parameters():
        if 'norm' not in name:
            torch.nn.init.normal_(p, std=0.3)
    return model


def take_attention_path(path: str, block,
                        device: torch.device = torch.device('cpu')) -> contextlib.AbstractContextManager:
    """Make ``block`` run the attention kernel path named in ATTENTION_PATHS within the returned
    context, through mmfocal's public switch (nothing of torch is replaced). The CPU kernel paths
    exist only on the CPU: on another ``device`` the test skips."""
    from mmfocal.models.layers import attention_path
    if path.startswith('cpu') and device.type != 'cpu':
        pytest.skip(f'the {path!r} attention path runs on the CPU only')
    if path == 'cpu, one window per chunk':  # big maps go in chunks of windows
        return attention_path(chunk_bytes=1)
    if path == 'other devices':  # scaled_dot_product_attention / matmul, run here on CPU
        return attention_path(kernels='generic')
    if path == 'standard ops':  # what exporters and torch.compile get, here in eager mode
        return attention_path('standard_ops')
    if path == 'autograd (attention dropout)':  # the automatic choice under attention dropout
        block.attn.attn_drop = DropNothing()
    return attention_path('auto')


def assert_block_matches_reference(block, x, reference_fn, allow_unused: bool = False,
                                   device: torch.device = torch.device('cpu')) -> None:
    """``block(x)`` (training and inference) and its gradients against ``reference_fn(block, x)``,
    in float64: what is compared is the math, not float32 rounding of large gradients. The block
    runs on ``device`` (a copy of it, for another device), the reference on the CPU.
    ``allow_unused``: a parameter the reference does not use (FocalTransformer's rolled-key table
    at a map too small for rolled keys) must then get no gradient, or a zero one, from the block."""
    tested = block if device.type == 'cpu' else copy.deepcopy(block).to(device)
    x_tested = x if device.type == 'cpu' else x.detach().to(device).requires_grad_()
    ours = tested(x_tested)
    reference = reference_fn(block, x)
    torch.testing.assert_close(ours.cpu(), reference, atol=1e-9, rtol=1e-9)
    with torch.no_grad():  # inference takes a kernel without the log-sum-exp
        torch.testing.assert_close(tested(x_tested).cpu(), reference, atol=1e-9, rtol=1e-9)
    grad_out = torch.randn_like(reference)
    params = [p for p in tested.parameters() if p.requires_grad]
    grads = torch.autograd.grad(ours, [x_tested] + params, grad_out.to(device), allow_unused=allow_unused)
    ref_params = [p for p in block.parameters() if p.requires_grad]
    ref_grads = torch.autograd.grad(reference, [x] + ref_params, grad_out, allow_unused=allow_unused)
    names = ['input'] + [n for n, p in block.named_parameters() if p.requires_grad]
    for name, g, r in zip(names, grads, ref_grads):
        if r is None:
            assert g is None or g.abs().max() == 0, name
            continue
        torch.testing.assert_close(g.cpu(), r, atol=1e-8, rtol=1e-8, msg=lambda m: f'{name}: {m}')


def bfloat16_autocast_step(model, device: torch.device = torch.device('cpu')):
    """One forward+backward of ``model`` (moved to ``device``) under bfloat16 autocast on a 64x96
    image; checks the outputs are finite and close to float32's (mean abs error < 0.05) and
    returns them."""
    model.to(device)
    x = torch.randn(1, 3, 64, 96, device=device)
    reference = model(x)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    for out, ref in zip(outs, reference):
        assert torch.isfinite(out).all()
        assert (out.float() - ref).abs().mean() < 0.05
    return outs


# ---------------------------------------------------------------------------------------------
# ONNX files: a wrong graph, to show that a comparison with PyTorch catches one

def onnx_with_one_weight_changed(path: str, out: str) -> str:
    """A copy of the ONNX file ``path`` at ``out`` whose first convolution (the patch embedding)
    has one weight larger by 1: a graph that computes something else everywhere. Returns ``out``."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)
    conv = next(node for node in model.graph.node if node.op_type == 'Conv')
    weight = next(init for init in model.graph.initializer if init.name == conv.input[1])
    changed = numpy_helper.to_array(weight).copy()
    changed.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(changed, weight.name))
    onnx.save(model, out)
    return out


# ---------------------------------------------------------------------------------------------
# torch.compile: graphs counted, compiled against eager

class GraphCounter:
    """A torch.compile backend that keeps the graphs Dynamo hands it and runs them as traced (no
    Inductor: a compile costs the tracing alone). Resets Dynamo first: earlier compiles of the
    same code (another test's model) would count against its recompile limit."""

    def __init__(self):
        torch._dynamo.reset()
        self.graphs = []

    def __call__(self, graph_module, example_inputs):
        self.graphs.append(graph_module)
        return graph_module.forward


def _outputs_and_gradients(fn, module, x) -> list:
    """``fn(x)`` as a list of tensors; in training mode also the gradients, with respect to ``x``
    and ``module``'s trainable parameters, of the outputs against fixed random output gradients."""
    if not module.training:
        with torch.no_grad():
            outs = fn(x)
        return [outs] if isinstance(outs, torch.Tensor) else list(outs)
    x = x.detach().requires_grad_()
    outs = fn(x)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    generator = torch.Generator().manual_seed(0)
    grad_outs = [torch.randn(o.shape, generator=generator) for o in outs]
    wrt = [x] + [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(outs, wrt, grad_outs, allow_unused=True)
    return [o.detach() for o in outs] + [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]


def assert_compiled_matches_eager(module, compiled, x, tolerance: float = 1e-5) -> None:
    """``compiled(x)`` against ``module(x)``: the outputs and, in training mode, the gradients of
    the input and of every parameter, each within ``tolerance`` of the tensor's largest value (at
    least 1)."""
    expected, got = _outputs_and_gradients(module, module, x), _outputs_and_gradients(compiled, module, x)
    assert len(expected) == len(got) >= 1
    for i, (e, g) in enumerate(zip(expected, got)):
        assert (e - g).abs().max() <= tolerance * e.abs().max().clamp(min=1), (tuple(x.shape), i)


def weight_decay_by_parameter(model, optim_wrapper_cfg) -> dict:
    """The optimizer built from ``optim_wrapper_cfg`` for ``model``: each parameter's weight decay,
    keyed by ``id(param)``."""
    optimizer = build_optim_wrapper(model, optim_wrapper_cfg).optimizer
    return {id(p): group['weight_decay'] for group in optimizer.param_groups for p in group['params']}


def norm_parameter_ids(model) -> set:
    """``id`` of every parameter of the model's LayerNorm, GroupNorm and BatchNorm layers."""
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
    return {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}


# Runs a script's command lines for ScriptLauncher: imports the modules named, then reads one
# request a line (arguments, environment, output files) and runs each in a child of its own, forked
# from this process, as `python SCRIPT ARGS` runs it; answers with the child's exit status.
_LAUNCHER = r'''
import json, os, runpy, sys, traceback
script, preloaded = sys.argv[1], sys.argv[2:]
for name in preloaded:
    __import__(name)
inherited = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(request['env'])
            for fd, path in ((1, request['stdout']), (2, request['stderr'])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            given = [p for p in request['env'].get('PYTHONPATH', '').split(os.pathsep) if p]
            sys.path[:] = ([os.path.dirname(script)] + given + [p for p in sys.path[1:] if p not in inherited])
            sys.argv = [script] + request['args']
            try:
                runpy.run_path(script, run_name='__main__')
                code = 0
            except SystemExit as stop:
                if stop.code is None or isinstance(stop.code, int):
                    code = stop.code or 0
                else:
                    print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
'''


class ScriptLauncher:
    """Runs the command lines of one script as ``python SCRIPT ARGS`` does, each in a process of
    its own, without paying the script's start-up each time.

    The modules in ``preload`` (torch, mmfocal: seconds) are imported once, in a launcher process
    started in :func:`tool_environment` in ``cwd`` (the repository by default), and each command
    line runs in a child forked from it: the script as ``__main__``, its arguments, the
    environment given, its own output and exit status. For a script tested through several
    command lines. ``script`` is under ``tools/`` unless absolute. Use as a context manager.
    """

    def __init__(self, script: str, preload: Sequence[str] = (), cwd: Optional[str] = None):
        self.script = script if osp.isabs(script) else osp.join(TOOLS, script)
        self.process = subprocess.Popen([sys.executable, '-c', _LAUNCHER, self.script, *preload], cwd=cwd or ROOT,
                                        env=tool_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.folder = tempfile.mkdtemp(prefix='script_launcher_')

    def __call__(self, *args, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """``python SCRIPT ARGS`` in the environment ``env`` (:func:`tool_environment` by default)."""
        args = [str(arg) for arg in args]
        out, err = osp.join(self.folder, 'stdout'), osp.join(self.folder, 'stderr')
        request = dict(args=args, env=dict(tool_environment() if env is None else env), stdout=out, stderr=err)
        self.process.stdin.write(json.dumps(request) + '\n')
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f'the launcher of {self.script} stopped (exit status {self.process.wait()})')
        with open(out) as stdout, open(err) as stderr:
            return subprocess.CompletedProcess([self.script, *args], int(answer), stdout.read(), stderr.read())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> 'ScriptLauncher':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
