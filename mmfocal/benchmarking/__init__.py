"""What the benchmarks under ``benchmarks/`` share, and what the GPU check computes.

* :mod:`.peers`: the backbones compared (Focal-T, Focal-fast-T, mmdet's Swin-T), built alike;
* :mod:`.timing`: a backbone's passes timed and their memory measured, two backbones' times
  compared round by round;
* :mod:`.parity`: one backbone on two devices (or two attention paths), outputs and gradients
  compared;
* :mod:`.detection`: Mask R-CNN from the configs, a synthetic batch, a training iteration;
* :mod:`.gpu_check`: the sections of ``benchmarks/gpu_check.py``'s report.

The scripts under ``benchmarks/`` parse their arguments and print; docs/speed.md and docs/gpu.md
say what they measured.
"""
from .gpu_check import SECTIONS, SectionSkipped, Settings, run_sections, write_report
from .parity import MODELS, PARITY_PATHS, check_parity, other_devices_path
from .peers import LABELS, SWIN_T, build_backbone
from .timing import compare_speed, machine_description, paired_ratio, ratio_text, step

__all__ = ['LABELS', 'MODELS', 'PARITY_PATHS', 'SECTIONS', 'SWIN_T', 'SectionSkipped', 'Settings', 'build_backbone',
           'check_parity', 'compare_speed', 'machine_description', 'other_devices_path', 'paired_ratio',
           'ratio_text', 'run_sections', 'step', 'write_report']
