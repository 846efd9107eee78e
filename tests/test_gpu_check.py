"""benchmarks/gpu_check.py, the one command for a GPU machine, and its sections
(mmfocal.benchmarking), checked here without a GPU: every GPU section skips with its reason, the
sections' machinery runs on the CPU, and the parity check compares what it should (it fails on a
wrong attention path)."""
import contextlib
import os.path as osp

import pytest
import torch

from mmfocal.benchmarking import detection, gpu_check, parity
from mmfocal.models.layers import torch_kernels

from .helpers import ROOT, run_tool

SCRIPT = osp.join(ROOT, 'benchmarks', 'gpu_check.py')


@pytest.mark.skipif(torch.cuda.is_available(), reason='here the GPU sections would run')
def test_without_cuda_every_gpu_section_skips_and_the_report_is_written(tmp_path):
    report_path = tmp_path / 'report' / 'gpu_report.md'
    _, output = run_tool(SCRIPT, '--quick', '--out', report_path)
    report = report_path.read_text()
    assert f'report written to {report_path}' in output
    assert [line for line in output.splitlines() if line.startswith('## ')] == [
        f'## {title}' for title, _, _ in gpu_check.SECTIONS.values()]
    for name, (title, _, _) in gpu_check.SECTIONS.items():
        section = report.split(f'## {title}\n')[1].split('\n## ')[0]
        if name == 'environment':
            assert f'torch {torch.__version__}' in section and 'CUDA available: False' in section
            assert 'mmcv ops:' in section
        else:
            assert section.strip().startswith('skipped: no CUDA device'), (name, section)
    assert 'failed' not in report


def test_gpu_sections_run_on_the_cpu_in_quick_mode():
    """All GPU sections but the test suite's (run on its own), on the CPU at tiny sizes: parity
    through the attention code of other devices, bf16 autocast steps, the speed table and the
    Mask R-CNN iteration against Swin-T."""
    settings = gpu_check.Settings(quick=True, device='cpu')
    report = gpu_check.run_sections(settings, ['parity', 'amp', 'speed', 'mask_rcnn'], [])
    text = '\n'.join(report)
    assert 'failed' not in text and 'skipped' not in text and '**NO**' not in text, text
    parity_rows = [line for line in report if line.startswith(('| Focal-T |', '| Focal-fast-T |'))]
    assert len(parity_rows) == len(parity.MODELS) * len(settings.parity_cases) * len(parity.PARITY_PATHS)
    assert all(row.endswith('| yes |') for row in parity_rows)
    amp_row, iteration_row = [line for line in report if line.startswith('| fp32 |')]  # the CPU runs float32 only
    torchvision_row, = [line for line in report if line.startswith("| fp32, torchvision's RoIAlign |")]
    for row in (amp_row, torchvision_row):
        assert row.endswith('| True, True, True | - | yes |'), row
    # torchvision's RoIAlign (aligned) computes mmcv's: the same losses
    assert amp_row.split(' | ')[1] == torchvision_row.split(' | ')[1]
    model = detection.build_detector(detection.FOCAL_DET_CONFIG, settings.device, settings.quick,
                                     torchvision_roi_align=True)
    extractors = (model.roi_head.bbox_roi_extractor, model.roi_head.mask_roi_extractor)
    assert all(layer.use_torchvision for extractor in extractors for layer in extractor.roi_layers)
    assert len(iteration_row.split('|')) == 9 and 'nan' in iteration_row  # no peak memory on the CPU
    speed_rows = [line for line in report if line.startswith('| 2x3x64x96 |')]
    assert [row.split(' | ')[1:3] for row in speed_rows] == [
        ['fp32', 'fwd'], ['fp32', 'fwd+bwd'], ['bf16 autocast', 'fwd'], ['bf16 autocast', 'fwd+bwd']]


@contextlib.contextmanager
def _wrong_log_sum_exp():
    """The code path of other devices with the training kernel's log-sum-exp off by 0.01: its
    forward output stays right, the probabilities its backward recomputes are 1% off."""
    def shifted(*args):
        out, lse = torch_kernels.attend_with_lse(*args)
        return out, lse + 0.01

    with gpu_check.other_devices_path(), torch_kernels.override_kernel('with_lse', shifted):
        yield


@pytest.mark.parametrize('name', list(parity.MODELS))
def test_parity_passes_the_right_paths_and_fails_a_wrong_one(name):
    settings = gpu_check.Settings(quick=True, device='cpu')
    (size, batch), = settings.parity_cases
    right = parity.check_parity(name, size, batch, torch.device('cpu'), settings.backbone_settings,
                                parity.other_devices_path)
    assert [row['passed'] for row in right] == [True, True, True]
    assert all(row['output_error'] < 1e-5 for row in right)
    wrong = parity.check_parity(name, size, batch, torch.device('cpu'), settings.backbone_settings,
                                _wrong_log_sum_exp)
    assert [row['passed'] for row in wrong] == [True, False, True]  # only the recomputing kernel is wrong
    assert wrong[1]['output_error'] < 1e-5 and wrong[1]['gradient_error'] > 1e-3
