"""Everything a CUDA machine has to say about mmfocal, in one run and one markdown report.

    python benchmarks/gpu_check.py --out $OUT/gpu_report.md   # on a GPU: sections within --time-limit (420 s)
    python benchmarks/gpu_check.py --quick                    # tiny sizes; without CUDA the GPU sections skip
    python benchmarks/gpu_check.py --quick --device cpu       # the GPU sections' machinery, run on the CPU

Sections, each with its own time budget (a section that fails or runs out of time says so, and
the next one runs):

1. environment: GPU, torch, CUDA, cuDNN, mmcv (whether its ops have CUDA kernels), mmdet.
2. tests: the test suite's device tests (attention paths against their float64 references,
   bfloat16 autocast, the kernel's bias forms) with MMFOCAL_TEST_DEVICE=cuda.
3. parity: every attention path on the GPU (inference: scaled_dot_product_attention; training:
   the recomputing kernel; training with attention dropout: plain autograd) against the CPU
   float32 path, same weights and input, Focal-T and Focal-fast-T at 800x1344 and 512x512, TF32
   off: outputs within 1e-4 and gradients (input and every parameter) within 1e-3, each relative
   to the tensor's largest value (outputs: at least 1; gradients: see largest_errors).
4. amp: Mask R-CNN Focal-T (configs/det/mask_rcnn_focal_t_1x.py) training steps under fp16
   (with a GradScaler) and bf16 autocast on a synthetic batch of 2 images: finite losses and
   gradients; bf16 also with torchvision's RoIAlign (mmcv's has no bf16 kernel).
5. speed: Focal-T and Focal-fast-T against mmdet's Swin-T (benchmarks/backbone_speed.py):
   forward and forward+backward time (CUDA events, median of 10 after warm-up) and peak memory
   at 2x3x800x1344 and 2x3x512x512, fp32, bf16 and fp16 autocast, with the ratios to Swin-T.
6. mask_rcnn: one whole Mask R-CNN training iteration (forward, backward, AdamW step), Focal-T
   against mmdet's own Swin-T Mask R-CNN config (same neck and heads), batch 2, fp32, fp16 and bf16.

Without CUDA the GPU sections (2-6) say 'skipped: no CUDA device'. Mask R-CNN needs mmcv's
compiled ops (RoIAlign, NMS) on the GPU: where mmcv was built without CUDA kernels, sections 4
and 6 say so and skip.
"""
import argparse
import os
import os.path as osp
import sys
import time

from mmfocal.benchmarking.gpu_check import SECTIONS, Settings, run_sections, write_report

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the checkout whose device tests run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = osp.join(os.environ['OUT'], 'gpu_report.md') if os.environ.get('OUT') else None
    parser.add_argument('--out', default=default_out, help='also write the report here (default: $OUT/gpu_report.md '
                        'when $OUT is set)')
    parser.add_argument('--quick', action='store_true', help='tiny model and inputs, few repeats')
    parser.add_argument('--device', default='cuda', help='where the GPU sections run (default cuda; cpu to check '
                        'their machinery here, the attention then takes the code path of other devices)')
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument('--time-limit', type=float, default=420,
                        help='seconds for all sections (each also has its own budget); default 420')
    args = parser.parse_args(argv)
    begin = time.perf_counter()
    settings = Settings(args.quick, args.device, repository=ROOT)
    report = [f'# mmfocal GPU check ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})', '',
              f'`{" ".join(["python", "benchmarks/gpu_check.py"] + (argv if argv is not None else sys.argv[1:]))}`', '']
    run_sections(settings, args.sections, report, args.out, args.time_limit)
    report.append(f'Total: {time.perf_counter() - begin:.0f} s')
    print(report[-1])
    if args.out:
        write_report(report, args.out)
        print(f'report written to {args.out}')


if __name__ == '__main__':
    main()
