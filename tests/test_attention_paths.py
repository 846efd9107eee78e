"""The public attention-path switch (mmfocal.models.layers.attention_path), the refusal of tracers
the automatic choice does not know, and the docstring examples of the public classes."""
import copy
import doctest
import logging
import os
import platform
import shutil
import subprocess
import sys

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mmfocal.models.backbones import focal_fast_transformer, focal_transformer
from mmfocal.models.layers import (
    FocalFastTransformerBlock,
    FocalTransformerBlock,
    PathChoice,
    UnknownTracerError,
    attention_path,
    attention_settings,
    attention_switch,
    chunking,
    compiled_kernels,
    explain_path,
    focal_attention,
    focal_fast_attention,
    is_tracing,
    torch_kernels,
)
from mmfocal.models.layers.compiled_kernels.__main__ import main as build_kernels
from mmfocal.models.layers.tracing import unclassified_tracing

from .helpers import with_large_weights

FLASH_KERNEL = 'aten._scaled_dot_product_flash_attention_for_cpu.default'
COMPILED_KERNELS = ('mmfocal_cpu.focal_attention_forward.default', 'mmfocal_cpu.focal_attention_backward.default')
# PyTorch's CPU flash kernel with a mask (torch >= 2.3): the 'cpu' kernels; the CPU takes 'generic' without it.
NO_CPU_FLASH_KERNEL = torch_kernels.cpu_flash_kernel_reason()
needs_cpu_flash_kernel = pytest.mark.skipif(NO_CPU_FLASH_KERNEL is not None, reason=str(NO_CPU_FLASH_KERNEL))
# Where the compiled CPU kernels must build (CI's machines are such): a failed build there is a failure.
BUILDS_COMPILED_KERNELS = sys.platform.startswith('linux') and platform.machine() == 'x86_64' and \
    torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512')


class OpNames(TorchDispatchMode):
    """Records the names of the ATen ops that run within it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def _block(fast: bool = False):
    torch.manual_seed(0)
    if fast:
        return FocalFastTransformerBlock(16, 2, focal_level=2, topk=16).eval()
    return FocalTransformerBlock(16, 2).eval()


def _ops_of(block, x, path):
    """ATen ops a forward of ``block`` runs with ``path`` forced (the automatic choice would refuse
    the recording dispatch mode; a forced path is taken as given)."""
    with attention_path(path), OpNames() as recorder:
        block(x)
    return recorder.names


@needs_cpu_flash_kernel
@pytest.mark.parametrize('fast', [False, True])
def test_forced_path_is_the_path_taken(fast):
    block = _block(fast)
    x = torch.randn(1, 20, 23, 16, requires_grad=True)
    with torch.no_grad():
        fused = _ops_of(block, x, 'fused')
        standard = _ops_of(block, x, 'standard_ops')
        autograd = _ops_of(block, x, 'autograd')
    recompute = _ops_of(block, x, 'recompute')
    assert FLASH_KERNEL in fused and FLASH_KERNEL in recompute  # the CPU flash kernel
    assert 'aten.logsumexp.default' not in recompute
    for names in (standard, autograd):
        assert FLASH_KERNEL not in names and 'aten._softmax.default' in names
    with attention_path(kernels='generic'):  # the route of other devices
        generic = _ops_of(block, x, 'recompute')
    assert FLASH_KERNEL not in generic and 'aten.logsumexp.default' in generic


@pytest.mark.skipif(NO_CPU_FLASH_KERNEL is None, reason='this torch has the CPU flash kernel with a mask')
def test_without_the_cpu_flash_kernel_the_cpu_takes_the_generic_kernels():
    """torch < 2.3 (no aten::_scaled_dot_product_flash_attention_for_cpu with a mask): by default
    the fused paths run on the 'generic' kernels, the same function; forcing 'cpu' names the version."""
    assert 'torch >= 2.3' in NO_CPU_FLASH_KERNEL
    block = _block()
    x = torch.randn(1, 20, 23, 16, requires_grad=True)
    recompute = _ops_of(block, x, 'recompute')
    assert 'aten.logsumexp.default' in recompute and FLASH_KERNEL not in recompute
    with attention_path(kernels='cpu'), pytest.raises(ValueError, match=r"kernels='cpu'.*torch >= 2\.3.*'generic'"):
        block(x)


def test_forced_paths_give_the_automatic_paths_outputs():
    block = _block().double()
    x = torch.randn(2, 15, 22, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        for path in ('fused', 'recompute', 'autograd', 'standard_ops'):
            with attention_path(path):
                torch.testing.assert_close(block(x), expected, atol=1e-12, rtol=1e-12, msg=path)


def test_attention_path_checks_its_arguments_and_restores_the_settings():
    default = attention_settings()
    assert default.path == 'auto' and default.kernels is None and default.chunk_bytes is None  # from the machine
    with pytest.raises(ValueError, match=r"attention path must be one of .*'standard_ops'.*got 'onnx'"):
        with attention_path('onnx'):
            pass
    with pytest.raises(ValueError, match='chunk_bytes must be a positive integer, got 0'):
        with attention_path(chunk_bytes=0):
            pass
    with pytest.raises(ValueError, match=r"kernels must be one of \('compiled', 'cpu', 'generic'\), got 'cuda'"):
        with attention_path(kernels='cuda'):
            pass
    with pytest.raises(RuntimeError, match='inside'):
        with attention_path('standard_ops', chunk_bytes=7):
            with attention_path(kernels='generic') as inner:  # None keeps the outer settings
                assert inner == ('standard_ops', 7, 'generic')
            assert attention_settings() == ('standard_ops', 7, None)
            raise RuntimeError('inside')
    assert attention_settings() == default


@needs_cpu_flash_kernel
def test_default_chunk_size_is_the_l2_cache_of_the_threads_in_use(monkeypatch):
    """Without a chunk size set, the CPU kernels' chunks hold as many bytes as the L2 caches of the
    threads PyTorch uses, read from sysfs (the fallback where it says nothing), at each call,
    within the bounds where the sweep of docs/speed.md found the chunking not to matter."""
    l2 = chunking.l2_cache_bytes()
    assert l2 >= 2**16 and l2 % 2**10 == 0
    if not os.path.isdir('/sys/devices/system/cpu/cpu0/cache'):
        assert l2 == chunking.FALLBACK_L2_BYTES
    # glibc's own reading (cpuid), where it has one, says the same as sysfs
    getconf = subprocess.run(['getconf', 'LEVEL2_CACHE_SIZE'], capture_output=True, text=True) \
        if shutil.which('getconf') else None
    if getconf and getconf.returncode == 0 and getconf.stdout.strip().isdigit() and int(getconf.stdout) > 0:
        assert l2 == int(getconf.stdout)
    threads = torch.get_num_threads()

    def chunk_bytes_with(l2_bytes, num_threads):
        monkeypatch.setattr(chunking, 'l2_cache_bytes', lambda: l2_bytes)
        torch.set_num_threads(num_threads)
        return chunking.default_chunk_bytes()

    try:
        assert chunk_bytes_with(2**21, 2) == 2**22  # 2 MiB of L2 per core (this machine), two threads
        assert chunk_bytes_with(2**20, 2) == 2**21  # the AMD EPYC of the issue
        assert chunk_bytes_with(2**18, 2) == 2**21  # small L2s: at least 1 MiB per thread
        assert chunk_bytes_with(2**21, 16) == 2**24  # many threads: at most 16 MiB
        assert chunk_bytes_with(2**21, 1) == 2**21
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    assert [chunking.parse_cache_size(t) for t in ('2048K\n', '1M', '512', '32768K')] == [
        2**21, 2**20, 512, 2**25]
    # The chunks follow the derived size: 4 windows of 1 MiB in a 4 MiB chunk, one below it.
    monkeypatch.setattr(chunking, 'default_chunk_bytes', lambda: 4 * 2**20)
    assert len(chunking.window_chunks(8, 2**20, torch.device('cpu'))) == 2
    with attention_path(chunk_bytes=2**20 - 1):
        assert len(chunking.window_chunks(8, 2**20, torch.device('cpu'))) == 8


def test_the_choice_says_why_the_faster_paths_and_kernels_were_not_taken(caplog):
    """explain_path (and, at DEBUG, a logged line a forward pass) gives the path and kernels the
    rule takes, with each kernel's own reasons for not taking the faster ones."""
    q, source, bias = torch.randn(2, 49, 2, 8), torch.randn(2, 60, 2, 2, 8), torch.randn(2, 49, 10)
    on_cpu = 'generic' if NO_CPU_FLASH_KERNEL else 'cpu'
    heads_reason = 'they take head dims 32 and at most 56 queries a window, got 8 and 49'
    small_heads = f"'compiled' kernels: {heads_reason}"
    assert explain_path(q, source, bias) == PathChoice('fused', on_cpu, (small_heads, ))
    assert explain_path(q.requires_grad_(), source, bias) == PathChoice(
        'recompute', on_cpu, ("'fused' computes no gradients", small_heads))
    assert explain_path(q, source, bias, torch.nn.Dropout(0.1), training=True) == PathChoice(
        'autograd', None, ("'recompute' and 'fused' cannot apply attention dropout (p=0.1 in training)", ))
    with attention_path('fused', kernels='generic'), torch.no_grad():
        assert explain_path(q, source, bias) == PathChoice('fused', 'generic', (
            "attention_path('fused') forces it", "'compiled' kernels: attention_path(kernels='generic') forces others",
            "'cpu' kernels: attention_path(kernels='generic') forces others"))
    assert compiled_kernels.not_supported_reasons(q.double(), source, bias, bias_columns=torch.zeros(1, 10)) == [
        "they take one bias shared by every window (FocalTransformer's), not a bias per window",
        'they compute in float32, got q torch.float64, keys torch.float32, bias torch.float32', heads_reason]
    assert torch_kernels.cpu_flash_not_supported_reasons(torch.device('meta'))[0] == \
        'it runs on CPU tensors, got a meta tensor'
    caplog.set_level(logging.DEBUG, logger='mmfocal.models.layers')
    with torch.no_grad():
        FocalTransformerBlock(16, 2, window_size=5).eval()(torch.randn(1, 10, 10, 16))
    logged, = [r.getMessage() for r in caplog.records if r.name.startswith('mmfocal.models.layers')]
    assert logged.startswith(f"focal attention: path 'fused' on {on_cpu} kernels") and 'head dims 32' in logged


def test_forced_paths_refuse_what_they_cannot_compute():
    block = _block()
    x = torch.randn(1, 14, 14, 16, requires_grad=True)
    with pytest.raises(ValueError, match="'fused' computes no gradients: take 'recompute'"):
        with attention_path('fused'):
            block(x)
    block.train().attn.attn_drop.p = 0.1
    for path in ('fused', 'recompute'):
        with pytest.raises(ValueError, match=f"'{path}' cannot apply attention dropout"):
            with attention_path(path):
                block(x)


def _focal_t_shaped_block():
    """A block whose attention has FocalTransformer's head dims (32), the compiled kernels' case;
    weights large enough that the attention dominates the block's output and gradients."""
    torch.manual_seed(0)
    return with_large_weights(FocalTransformerBlock(64, 2)).train()


def _output_and_gradients(block, x, path: str):
    """``block(x)`` under ``path`` forced, and the gradients of x and every parameter, with the
    ATen and mmfocal ops that ran (a forced path is taken under the recording dispatch mode)."""
    x = x.detach().requires_grad_()
    with attention_path(path), OpNames() as recorder:
        out = block(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *block.parameters()])
    return out, grads, recorder.names


@pytest.mark.skipif(not BUILDS_COMPILED_KERNELS, reason='the compiled kernels are built for x86-64 Linux with AVX2')
def test_compiled_kernels_build_here_and_take_focal_t_attention_by_default(monkeypatch, capsys):
    """On x86-64 Linux with AVX2 the kernels build (also ahead of use, by the documented command,
    into the folder the first use builds into), and FocalTransformer's attention in float32 on
    the CPU runs on them, both passes, with the outputs and gradients of the standard-ops
    attention in float64 (border windows, padding, rolled and pooled keys, a batch of two)."""
    monkeypatch.delenv(compiled_kernels.SWITCH, raising=False)
    assert build_kernels(['--build']) == 0
    assert capsys.readouterr().out == (f'mmfocal compiled CPU attention kernels ({compiled_kernels.vector_build()}) '
                                       f'built in {compiled_kernels.build_directory()}\n')
    assert os.path.isfile(os.path.join(compiled_kernels.build_directory(), f'{compiled_kernels.extension_name()}.so'))
    assert compiled_kernels.unavailable_reason() is None
    # the build of PyTorch's vector width here: queries padded to whole vectors of 8 or 16 floats
    assert compiled_kernels.padded_queries() == {'AVX2': 56, 'AVX512': 64}[compiled_kernels.vector_build()]
    block = _focal_t_shaped_block()
    x = torch.randn(2, 20, 23, 64)
    out, grads, names = _output_and_gradients(block, x, 'recompute')
    assert set(COMPILED_KERNELS) <= names and FLASH_KERNEL not in names
    reference = copy.deepcopy(block).double()
    expected, expected_grads, _ = _output_and_gradients(reference, x.double(), 'standard_ops')
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    for name, ours, theirs in zip(['x', *(n for n, _ in block.named_parameters())], grads, expected_grads):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item(), msg=name)
    # inference: the forward alone, the same output; and the same gradients again, bit for bit
    with torch.no_grad(), attention_path('fused'), OpNames() as recorder:
        torch.testing.assert_close(block(x), out.detach(), rtol=0, atol=0)
    assert COMPILED_KERNELS[0] in recorder.names
    assert all(torch.equal(a, b) for a, b in zip(grads, _output_and_gradients(block, x, 'recompute')[1]))


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != 'AVX512',
                    reason='the AVX2 build is the one the test above checks on this machine')
def test_the_avx2_build_computes_the_same_where_pytorch_runs_avx2():
    """An AVX-512 machine takes the AVX-512 build; machines with AVX2 only take the other build of
    the same source. Forced here as PyTorch's own kernels are (ATEN_CPU_CAPABILITY=avx2), in a
    fresh process, the test above passes with it: outputs and every gradient."""
    test = f'{os.path.abspath(__file__)}::test_compiled_kernels_build_here_and_take_focal_t_attention_by_default'
    env = dict(os.environ, ATEN_CPU_CAPABILITY='avx2')
    env.pop(compiled_kernels.SWITCH, None)
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', test],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0 and '1 passed' in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


@needs_cpu_flash_kernel
def test_compiled_kernels_can_be_switched_off_and_refuse_what_they_cannot_compute(monkeypatch, capsys):
    """MMFOCAL_COMPILED_KERNELS=0 gives PyTorch's kernels; forcing the compiled kernels on an
    attention they do not take (float64, head dims other than 32) is an error that says why; and
    the kernels check their inputs (an index beyond the key source is an error, not a read past it)."""
    block = _focal_t_shaped_block()
    x = torch.randn(1, 15, 15, 64)
    monkeypatch.setenv(compiled_kernels.SWITCH, '0')
    assert compiled_kernels.unavailable_reason() == 'MMFOCAL_COMPILED_KERNELS=0 is set'
    assert build_kernels(['--build']) == 0
    assert capsys.readouterr().out == \
        'mmfocal compiled CPU attention kernels: not built, MMFOCAL_COMPILED_KERNELS=0 is set\n'
    names = _output_and_gradients(block, x, 'recompute')[2]
    assert FLASH_KERNEL in names and not set(COMPILED_KERNELS) & names
    monkeypatch.delenv(compiled_kernels.SWITCH)
    with attention_path(kernels='compiled'), torch.no_grad():
        with pytest.raises(ValueError, match="kernels='compiled'.*compute in float32, got q torch.float64"):
            copy.deepcopy(block).double()(x.double())
        with pytest.raises(ValueError, match='head dims 32 .* got 8'):
            _block()(torch.randn(1, 14, 14, 16))
    if BUILDS_COMPILED_KERNELS:
        q, source = torch.zeros(1, 49, 2, 32), torch.zeros(1, 10, 2, 2, 32)
        bias_t, off_map = torch.zeros(2, 3, compiled_kernels.padded_queries()), torch.zeros(1, 3)
        with pytest.raises(RuntimeError, match='index out of the key source'):
            compiled_kernels.forward(q, source, torch.tensor([0, 5, 10]), bias_t, off_map)



@pytest.mark.skipif(not BUILDS_COMPILED_KERNELS, reason='the compiled kernels are built for x86-64 Linux with AVX2')
def test_a_failed_build_warns_once_and_the_attention_takes_pytorchs_kernels(tmp_path):
    """No working compiler (a real failed build, in a fresh process and extensions folder): one
    warning that names the failure, and the block still computes, on PyTorch's kernels."""
    script = ('import warnings, torch\n'
              'from mmfocal.models.layers import FocalTransformerBlock, compiled_kernels\n'
              'warnings.simplefilter("always")\n'
              'block = FocalTransformerBlock(64, 2).eval()\n'
              'with torch.no_grad():\n'
              '    for _ in range(2):\n'
              '        assert torch.isfinite(block(torch.randn(1, 14, 14, 64))).all()\n'
              'print("reason:", compiled_kernels.unavailable_reason())\n'
              'from mmfocal.models.layers.compiled_kernels.__main__ import main\n'
              'print("exit:", main(["--build"]))\n')
    env = dict(os.environ, CXX=str(tmp_path / 'no-such-compiler'), TORCH_EXTENSIONS_DIR=str(tmp_path / 'ext'))
    env.pop(compiled_kernels.SWITCH, None)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert 'reason: building them failed' in result.stdout
    assert result.stderr.count('the compiled CPU attention kernels are not used: building them failed') == 1
    # ahead of use, the documented command says why in one line and exits 1
    assert 'exit: 1' in result.stdout
    assert result.stderr.count('mmfocal compiled CPU attention kernels: not built: building them failed') == 1

def test_a_tracer_the_automatic_choice_does_not_know_gets_an_error_not_the_eager_kernels():
    """make_fx with real tensors (a TorchDispatchMode, no fake tensors, not Dynamo, not the
    TorchScript tracer) and FlopCounterMode are not recognised as tracing: the automatic choice
    would take the eager kernels, so it raises instead. With the path chosen, make_fx records a
    graph that computes the block."""
    block = _block()
    x = torch.randn(1, 20, 23, 16)
    assert not is_tracing(x)
    with torch.no_grad():
        with pytest.raises(UnknownTracerError, match=r'TorchDispatchMode .*ProxyTorchDispatchMode.*'
                                                     r"attention_path\('standard_ops'\)"):
            make_fx(block)(x)
        with pytest.raises(UnknownTracerError, match='FlopCounterMode'):
            with FlopCounterMode(display=False):
                block(x)
        with pytest.raises(UnknownTracerError, match='functionalized'):
            torch.func.functionalize(block)(x)

        with attention_path('standard_ops'):
            graph = make_fx(block)(x)
        other = torch.randn(1, 20, 23, 16)
        torch.testing.assert_close(graph(other), block(other), atol=1e-5, rtol=1e-5)
        with attention_path('fused'), FlopCounterMode(display=False) as counter:  # forced: taken as given
            block(x)
        assert counter.get_total_flops() > 0


def test_unclassified_tracing_names_each_kind_of_traced_tensor():
    plain = torch.randn(2, 3)
    assert unclassified_tracing(plain, torch.nn.Parameter(plain)) is None and not is_tracing(plain)
    found = {}

    def probe(name):
        def function(t):
            found[name] = unclassified_tracing(t)
            return t * 2
        return function

    make_fx(probe('make_fx'))(plain)
    torch.func.functionalize(probe('functionalize'))(plain)
    torch.func.vmap(probe('vmap'))(plain)
    probe('subclass')(plain.as_subclass(type('Tagged', (torch.Tensor, ), {})))
    probe('fx')(torch.fx.Proxy(torch.fx.Graph().placeholder('x')))
    assert 'TorchDispatchMode' in found['make_fx']
    assert 'functionalized' in found['functionalize']
    assert 'torch.func transform' in found['vmap']
    assert 'tensor subclass (Tagged)' in found['subclass']
    assert 'FX Proxy' in found['fx']

    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(plain)
    assert is_tracing(fake)  # known: fake tensors take the standard-ops path by themselves
    traced = []
    torch.jit.trace(lambda t: traced.append(is_tracing(t)) or t * 2, plain, check_trace=False)
    assert traced == [True]  # known: the TorchScript tracer


@pytest.mark.parametrize('module', [attention_switch, torch_kernels, focal_attention, focal_fast_attention,
                                    focal_transformer, focal_fast_transformer])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
