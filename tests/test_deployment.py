"""Deployment: ONNX files that compute what PyTorch computes (TorchScript and torch.export-based
exporters), ONNX Runtime evaluation through mmdet's / mmseg's metrics, torch.export and
torch.compile. Tiny models at small sizes; ONNX Runtime on the CPU provider."""
import os.path as osp
import re

import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config

from mmfocal.apis import build_model_from_config
from mmfocal.deployment.compile import compile_for_any_size, size_oblivious_problem
from mmfocal.deployment.export import (
    ExportedPart,
    dynamo_exporter_problem,
    export_onnx,
    flatten_outputs,
    torchscript_exporter_options,
)
from mmfocal.deployment.ort_model import ORTModel
from mmfocal.deployment.standard_ops import AdaptiveAvgPool2dMatmul
from mmfocal.errors import BadArgumentError
from mmfocal.models.backbones import FocalFastTransformer
from mmfocal.models.backbones.focal_transformer import ARCH_SETTINGS, FocalTransformer
from mmfocal.models.layers import attention_path
from mmfocal.models.layers.focal_attention import FocalTransformerBlock, FocalWindowAttention

from .helpers import (
    DET_CONFIGS,
    DET_DEMO_CONFIG,
    IN_PROCESS,
    SEG_DEMO_CONFIG,
    TINY,
    GraphCounter,
    assert_compiled_matches_eager,
    onnx_with_one_weight_changed,
    run_tool,
    shrink_backbone,
)

TOLERANCE = 1e-4
# The torch.export-based exporter and torch.export's Dim.AUTO (torch >= 2.5).
NO_DYNAMO_EXPORTER = dynamo_exporter_problem(dynamic=True)
def _dynamo_problem():
    """Why this torch's Dynamo cannot compile the backbones whole (fullgraph), or None: the key
    layout's Python (dict.setdefault, cached per size) is traced since torch 2.14.1 at the latest
    (tested there); torch 2.1's Dynamo refuses it."""
    def layout_like(x):
        slots = {}
        slots.setdefault(1, []).append(2)
        return x + len(slots)
    try:
        torch.compile(layout_like, fullgraph=True, backend='eager')(torch.zeros(1))
    except Exception as error:  # Dynamo's Unsupported
        return (f'torch {torch.__version__}: Dynamo cannot trace the key layout (dict.setdefault: '
                f'{type(error).__name__}); torch.compile of the backbones is tested on torch 2.14.1')
    return None


NO_FULLGRAPH_COMPILE = _dynamo_problem()
# torch.compile's size-oblivious tracing of backed sizes (torch >= 2.8), for compile_for_any_size.
NO_SIZE_OBLIVIOUS = size_oblivious_problem()
ONE_STAGE = dict(embed_dims=16, focal_levels=(2, ), focal_windows=(7, ), expand_sizes=(3, ), out_indices=(0, ),
                 drop_path_rate=0.)


def _test_size(arch: str) -> dict:
    """The arch's heads, window and focal settings, with a quarter of its channels and at most
    2 blocks per stage: the full sizes take minutes to export and run on 2 CPU cores."""
    settings = ARCH_SETTINGS[arch]
    return dict(embed_dims=settings['embed_dims'] // 4, num_heads=settings['num_heads'],
                depths=tuple(min(d, 2) for d in settings['depths']), drop_path_rate=0.)


def _max_difference(module, ort_model, inputs):
    with torch.no_grad():
        expected, _ = flatten_outputs(module(inputs))
    got, _ = flatten_outputs(ort_model(inputs))
    assert [e.shape for e in expected] == [g.shape for g in got]
    return max((e - g).abs().max().item() for e, g in zip(expected, got))


def _random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class _Attention(torch.nn.Module):

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn = FocalWindowAttention(16, 2).eval()

    def forward(self, x, pooled):
        return self.attn(x, [pooled])


def _export_attention(path):
    module = _Attention()
    example = (_random(1, 14, 14, 16), _random(1, 2, 2, 16, seed=1))
    torch.onnx.export(module, example, path, opset_version=17, input_names=['x', 'pooled'],
                      **torchscript_exporter_options())
    session = ORTSession(path)
    return module, session


class ORTSession:
    """A bare ONNX Runtime session for graphs without our metadata."""

    def __init__(self, path):
        import onnxruntime
        self.session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])

    def __call__(self, *inputs):
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]


def test_cause_of_wrong_onnx_graphs_eager_kernel_output_buffer_is_traced_as_a_constant(tmp_path):
    """The 0.43 error: the eager kernels write the attention output chunk by chunk into a
    preallocated buffer (``out[rows] = ...``) and call a private ATen kernel; the TorchScript
    tracer records the buffer as a constant (zeros) and drops the writes, so the exported block
    computes proj(0) whatever the input. The export path takes standard ops instead; forcing the
    eager kernels (here 'recompute': the exporter traces with gradients enabled) is the only way
    to get them while tracing."""
    x, pooled = _random(1, 14, 14, 16, seed=2), _random(1, 2, 2, 16, seed=3)
    with attention_path('recompute'):
        module, session = _export_attention(str(tmp_path / 'eager_kernel.onnx'))
    constant = session(x, pooled)
    np.testing.assert_allclose(constant, session(2 * x, -pooled))  # the input is ignored
    np.testing.assert_allclose(constant[0, 0, 0], module.attn.proj.bias.detach().numpy(), atol=1e-6)
    with torch.no_grad():
        assert np.abs(module(x, pooled).numpy() - constant).max() > 0.05

    module, session = _export_attention(str(tmp_path / 'standard_ops.onnx'))
    ops = {node.op_type for node in onnx.load(str(tmp_path / 'standard_ops.onnx')).graph.node}
    assert {'Gather', 'Softmax', 'MatMul'} <= ops
    with torch.no_grad():
        assert np.abs(module(x, pooled).numpy() - session(x, pooled)).max() < 1e-5


def test_standard_ops_path_is_the_eager_math_with_and_without_rolled_keys():
    """The export path keeps the rolled keys' slots at every size and removes them with a logit
    where the map is too small: the same outputs as the eager kernels, which drop them."""
    torch.manual_seed(0)
    block = FocalTransformerBlock(16, 2).eval()
    for shape in [(2, 6, 20, 16), (1, 15, 9, 16), (1, 5, 5, 16)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            eager = block(x)
            traced = torch.jit.trace(block, x, check_trace=False)(x)
        assert (eager - traced).abs().max() < 1e-5, shape


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_backbone_dynamic_onnx_matches_pytorch_at_every_size(arch, tmp_path):
    torch.manual_seed(0)
    backbone = FocalTransformer(**_test_size(arch)).eval()
    path = str(tmp_path / f'{arch}.onnx')
    outputs = export_onnx(backbone, _random(1, 3, 96, 128), path, dynamic=True, part='backbone')
    assert [name for name, _ in outputs] == [f'out_{i}' for i in range(4)]
    # ONNX Runtime runs an Einsum by transposing its whole input: the fc pooling exports as a
    # product and two sums (20x faster there for a stage-1 map)
    assert 'Einsum' not in {node.op_type for node in onnx.load(path).graph.node}
    ort_model = ORTModel(path)
    # the export size, sizes that are no multiple of 32 or of the window, batch 2, and both
    # sides over 7 windows at stage 4 (rolled keys there)
    for shape in [(1, 3, 96, 128), (2, 3, 75, 111), (1, 3, 33, 250), (1, 3, 236, 230)]:
        assert _max_difference(backbone, ort_model, _random(*shape)) < TOLERANCE, shape


def test_one_stage_detector_dynamic_onnx_matches_pytorch(tmp_path):
    cfg = shrink_backbone(Config.fromfile(osp.join(DET_CONFIGS, 'retinanet_focal_t_1x.py')))
    cfg.model.neck.out_channels = 32  # the head's width does not matter here; its time does
    cfg.model.bbox_head.update(in_channels=32, feat_channels=32, stacked_convs=1)
    model = build_model_from_config(cfg)
    module = ExportedPart(model, 'model')
    path = str(tmp_path / 'retinanet.onnx')
    outputs = export_onnx(module, _random(1, 3, 96, 128), path, dynamic=True)
    assert len(outputs) == 10  # scores and boxes at 5 levels
    ort_model = ORTModel(path)
    for shape in [(1, 3, 96, 128), (2, 3, 70, 90), (1, 3, 121, 57), (2, 3, 64, 64)]:
        assert _max_difference(module, ort_model, _random(*shape)) < TOLERANCE, shape


@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (4, 5)])
def test_adaptive_average_pooling_as_matmuls_equals_pytorchs(output_size):
    """Bins that divide, overlap (7 -> 3, 13 -> 6) and repeat positions (5 -> 6, 1 -> 2)."""
    pool, matmul = torch.nn.AdaptiveAvgPool2d(output_size), AdaptiveAvgPool2dMatmul(output_size)
    for shape in [(2, 3, 12, 18), (1, 4, 7, 13), (1, 2, 5, 1), (2, 1, 1, 9)]:
        x = _random(*shape)
        assert (pool(x) - matmul(x)).abs().max() < 1e-6, shape


def test_segmenter_dynamic_onnx_matches_pytorch_at_every_size(tmp_path):
    """The demo UperNet (its pyramid pooling to 1, 2, 3 and 6 as matrix products) from one dynamic
    file: stage-4 maps that 6 does not divide, smaller than 6, batch 2."""
    torch.manual_seed(0)
    module = ExportedPart(build_model_from_config(Config.fromfile(SEG_DEMO_CONFIG)), 'model')
    path = str(tmp_path / 'upernet.onnx')
    export_onnx(module, _random(1, 3, 128, 128), path, dynamic=True)
    assert not any(isinstance(m, AdaptiveAvgPool2dMatmul) for m in module.modules())  # put back
    ort_model = ORTModel(path)
    for shape in [(1, 3, 128, 128), (2, 3, 75, 111), (1, 3, 200, 57), (2, 3, 96, 160)]:
        assert _max_difference(module, ort_model, _random(*shape)) < TOLERANCE, shape


def test_two_stage_detector_model_part_is_refused_clearly():
    cfg = shrink_backbone(Config.fromfile(DET_DEMO_CONFIG))
    with pytest.raises(ValueError, match='two-stage detector.*--part features'):
        ExportedPart(build_model_from_config(cfg), 'model')


def test_onnx_file_of_fixed_size_refuses_other_sizes(tmp_path):
    torch.manual_seed(0)
    backbone = FocalTransformer(**ONE_STAGE, depths=(1, ), num_heads=(1, )).eval()
    path = str(tmp_path / 'fixed.onnx')
    export_onnx(backbone, _random(1, 3, 64, 64), path, part='backbone')
    ort_model = ORTModel(path)
    assert _max_difference(backbone, ort_model, _random(1, 3, 64, 64)) < TOLERANCE
    with pytest.raises(ValueError, match=r'takes inputs of shape \[1, 3, 64, 64\].*--dynamic'):
        ort_model(_random(1, 3, 64, 96))


def test_focal_fast_exports_at_a_fixed_size_and_refuses_a_dynamic_graph(tmp_path):
    torch.manual_seed(0)
    backbone = FocalFastTransformer(embed_dims=16, depths=(1, 1), num_heads=(1, 2), focal_levels=(2, 2),
                                    focal_topk=64, out_indices=(0, 1), drop_path_rate=0.).eval()
    path = str(tmp_path / 'fast.onnx')
    with pytest.raises(ValueError, match='fixed input size only.*without --dynamic'):
        export_onnx(backbone, _random(1, 3, 60, 92), path, dynamic=True, part='backbone')
    export_onnx(backbone, _random(2, 3, 60, 92), path, part='backbone')  # not window multiples
    ort_model = ORTModel(path)
    assert _max_difference(backbone, ort_model, _random(2, 3, 60, 92, seed=3)) < TOLERANCE


@pytest.mark.skipif(NO_DYNAMO_EXPORTER is not None, reason=str(NO_DYNAMO_EXPORTER))
def test_dynamo_exporter_and_torch_export_with_dynamic_sizes(tmp_path):
    """The torch.export-based ONNX exporter, on a one-stage backbone to keep the test short (the
    symbolic-shape tracing costs about half a minute per stage on a busy CPU)."""
    torch.manual_seed(0)
    backbone = FocalTransformer(**ONE_STAGE, depths=(2, ), num_heads=(2, )).eval()
    path = str(tmp_path / 'dynamo.onnx')
    export_onnx(backbone, _random(2, 3, 64, 96), path, dynamic=True, dynamo=True, part='backbone')
    ort_model = ORTModel(path)
    for shape in [(2, 3, 64, 96), (1, 3, 64, 96), (1, 3, 45, 250), (2, 3, 20, 13)]:
        assert _max_difference(backbone, ort_model, _random(*shape)) < TOLERANCE, shape

    auto = torch.export.Dim.AUTO
    program = torch.export.export(backbone, (_random(2, 3, 64, 96), ), dynamic_shapes=({0: auto, 2: auto, 3: auto}, ))
    x = _random(3, 3, 75, 111)
    with torch.no_grad():
        for expected, got in zip(backbone(x), program.module()(x)):
            assert (expected - got).abs().max() < 1e-5


@pytest.mark.skipif(NO_DYNAMO_EXPORTER is None and NO_SIZE_OBLIVIOUS is None,
                    reason='this torch has the torch.export-based exporter and size-oblivious tracing')
def test_what_an_older_torch_lacks_is_refused_in_one_line_naming_the_version(tmp_path):
    backbone = FocalTransformer(**ONE_STAGE, depths=(1, ), num_heads=(2, )).eval()
    if NO_DYNAMO_EXPORTER:
        refusal = r'needs torch.onnx.export\(dynamo=True\).*\(torch >= 2\.5\).*: export without --dynamo$'
        with pytest.raises(BadArgumentError, match=refusal):
            export_onnx(backbone, _random(1, 3, 32, 32), str(tmp_path / 'b.onnx'), dynamic=True, dynamo=True)
    if NO_SIZE_OBLIVIOUS:
        with pytest.raises(BadArgumentError, match=r'torch >= 2\.8 has\): use torch\.compile\(model, fullgraph=True\)'):
            compile_for_any_size(backbone)


@pytest.mark.skipif(NO_SIZE_OBLIVIOUS is not None, reason=str(NO_SIZE_OBLIVIOUS))
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_torch_compile_of_the_backbone_is_one_graph_for_every_batch_and_size(mode):
    """compile_for_any_size: fullgraph, dynamic from the first call, size-oblivious shapes. Sizes
    that are no multiple of 32 or of the window, batches 1 to 3, stage maps of one window and of
    one token (20x13: 1x1 at stage 4), then several windows everywhere (236x230)."""
    torch.manual_seed(0)
    backbone = getattr(FocalTransformer(**TINY), mode)()
    counter = GraphCounter()
    compiled = compile_for_any_size(backbone, backend=counter)
    for shape in [(2, 3, 64, 96), (1, 3, 75, 111), (2, 3, 20, 13), (3, 3, 121, 57), (1, 3, 236, 230)]:
        assert_compiled_matches_eager(backbone, compiled, _random(*shape))
    assert len(counter.graphs) == 1


@pytest.mark.skipif(NO_FULLGRAPH_COMPILE is not None, reason=str(NO_FULLGRAPH_COMPILE))
def test_torch_compile_as_it_is_recompiles_once_when_the_size_changes():
    """Plain torch.compile (automatic dynamic): the first size static, one recompile with dynamic
    sizes at the second, none after, for sizes whose stage maps all have 2 windows or more per
    side (here 2 stages: 57 pixels and more). Training mode, gradients compared."""
    torch.manual_seed(0)
    backbone = FocalTransformer(embed_dims=16, depths=(1, 1), num_heads=(1, 2), focal_windows=(7, 5),
                                focal_levels=(2, 2), expand_sizes=(3, 3), out_indices=(0, 1), drop_path_rate=0.).train()
    counter = GraphCounter()
    compiled = torch.compile(backbone, fullgraph=True, backend=counter)
    for shape in [(2, 3, 64, 96), (2, 3, 75, 111), (2, 3, 121, 57), (2, 3, 90, 200)]:
        assert_compiled_matches_eager(backbone, compiled, _random(*shape))
    assert len(counter.graphs) == 2


@pytest.mark.skipif(NO_FULLGRAPH_COMPILE is not None, reason=str(NO_FULLGRAPH_COMPILE))
def test_torch_compile_of_focal_fast_has_no_graph_break_at_a_fixed_size():
    """Focal-fast's key sets are computed per map size (topk over distances), so each input size
    is its own graph (README); at one size it compiles whole and matches eager."""
    torch.manual_seed(0)
    backbone = FocalFastTransformer(embed_dims=16, depths=(1, 1), num_heads=(1, 2), focal_levels=(2, 2),
                                    focal_topk=64, out_indices=(0, 1), drop_path_rate=0.).eval()
    counter = GraphCounter()
    compiled = torch.compile(backbone, fullgraph=True, backend=counter)
    assert_compiled_matches_eager(backbone, compiled, _random(2, 3, 60, 92))
    assert len(counter.graphs) == 1


def _random_checkpoint(cfg, path):
    model = build_model_from_config(cfg)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model


def _test_with_pytorch_and_onnxruntime(config, checkpoint, onnx_file, options, workspace, tmp_path):
    """The printed results of tools/test.py and of tools/deployment/onnx_test.py."""
    common = ['--work-dir', str(tmp_path / 'work'), '--cfg-options', *options]
    _, torch_out = run_tool('test.py', config, checkpoint, *common, cwd=str(workspace))
    _, onnx_out = run_tool(osp.join('deployment', 'onnx_test.py'), config, checkpoint, onnx_file, *common,
                           cwd=str(workspace))
    return torch_out, onnx_out


def _metric(output, key):
    return float(re.findall(rf'{key}: ([0-9.]+)', output)[-1])


def _assert_onnx_matches_and_a_wrong_graph_does_not(module, onnx_file, inputs, tmp_path):
    """ONNX Runtime's outputs are PyTorch's within TOLERANCE, and those of the same file with one
    weight changed are not: the comparison fails on a wrong graph (the metrics of a random-weight
    model alone could not tell)."""
    assert _max_difference(module, ORTModel(onnx_file), inputs) < TOLERANCE
    wrong = onnx_with_one_weight_changed(onnx_file, str(tmp_path / 'wrong.onnx'))
    assert _max_difference(module, ORTModel(wrong), inputs) > 100 * TOLERANCE


def test_onnx_test_gives_the_segmenters_miou(demo_workspace, tmp_path):
    checkpoint, onnx_file = str(tmp_path / 'seg.pth'), str(tmp_path / 'seg.onnx')
    cfg = Config.fromfile(SEG_DEMO_CONFIG)
    torch.manual_seed(0)
    model = _random_checkpoint(cfg, checkpoint)
    module = ExportedPart(model, 'model')
    export_onnx(module, _random(1, 3, 128, 128), onnx_file, dynamic=True)
    # the val batch: 2 pictures, padded by the data preprocessor
    _assert_onnx_matches_and_a_wrong_graph_does_not(module, onnx_file, _random(2, 3, 128, 128), tmp_path)
    torch_out, onnx_out = _test_with_pytorch_and_onnxruntime(SEG_DEMO_CONFIG, checkpoint, onnx_file, IN_PROCESS,
                                                             demo_workspace, tmp_path)
    assert 'model in ONNX Runtime' in onnx_out
    assert abs(_metric(torch_out, 'mIoU') - _metric(onnx_out, 'mIoU')) <= 0.01


def test_onnx_test_gives_mask_rcnn_bbox_map_with_backbone_and_neck_in_onnx(demo_workspace, tmp_path):
    checkpoint, onnx_file = str(tmp_path / 'det.pth'), str(tmp_path / 'det.onnx')
    torch.manual_seed(0)
    model = _random_checkpoint(Config.fromfile(DET_DEMO_CONFIG), checkpoint)
    _, printed = run_tool(osp.join('deployment', 'pytorch2onnx.py'), DET_DEMO_CONFIG, '--checkpoint', checkpoint,
                          '--out', onnx_file, '--part', 'features', '--shape', '128', '128', '--dynamic')
    assert f'exported to {onnx_file}' in printed and 'output out_4:' in printed  # FPN's 5 levels
    # the val batch: 2 pictures, padded by the data preprocessor
    _assert_onnx_matches_and_a_wrong_graph_does_not(ExportedPart(model, 'features'), onnx_file,
                                                    _random(2, 3, 128, 128), tmp_path)
    torch_out, onnx_out = _test_with_pytorch_and_onnxruntime(DET_DEMO_CONFIG, checkpoint, onnx_file, IN_PROCESS,
                                                             demo_workspace, tmp_path)
    assert 'features in ONNX Runtime' in onnx_out
    assert abs(_metric(torch_out, 'coco/bbox_mAP') - _metric(onnx_out, 'coco/bbox_mAP')) <= 0.001
