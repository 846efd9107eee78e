"""Convert an official Focal Transformer ImageNet checkpoint to a backbone-only mmfocal file, or
(--classifier) to an mmpretrain ImageClassifier checkpoint.

    python tools/convert_official_ckpt.py focal-tiny-is224-ws7.pth focal-tiny-backbone.pth
    python tools/convert_official_ckpt.py focalv2-tiny-useconv-is224-ws7.pth focal-fast-tiny-backbone.pth
    python tools/convert_official_ckpt.py --classifier focal-tiny-is224-ws7.pth focal-tiny-in1k.pth

Both kinds: the paper's model (focal-*.pth, for FocalTransformer) and Focal-fast (focalv2-*.pth,
for FocalFastTransformer); ``meta.backbone`` names the one the file is for.

The output holds ``state_dict`` (backbone tensors, classifier head, final norm and index buffers
dropped) and ``meta``; use it as ``init_cfg=dict(type='Pretrained', checkpoint=DST)``. Loading the
official file directly works as well: this tool is for those who want a file.

--classifier: the whole classifier of configs/cls/ (backbone.*, the final norm as backbone.norm3.*,
the head as head.fc.*; index buffers dropped), which ``mmengine.runner.load_checkpoint(classifier,
DST, strict=True)``, ``load_from`` and mmpretrain's own tools take. tools/test.py takes the official
file as well.
"""
import argparse

import mmfocal  # noqa: F401  (safe checkpoint loading)
from mmfocal.apis import convert_official_checkpoint
from mmfocal.cli import exit_on_error


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official checkpoint file or URL')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--classifier', action='store_true',
                        help='write an mmpretrain ImageClassifier checkpoint (head and final norm included)')
    args = parser.parse_args(argv)
    print(convert_official_checkpoint(args.src, args.dst, classifier=args.classifier))


if __name__ == '__main__':
    main()
