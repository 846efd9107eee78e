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
import os

import mmfocal  # noqa: F401  (safe checkpoint loading)
from mmfocal.cli import exit_on_error, match_official_backbone
from mmfocal.engine.atomic_checkpoint import save_checkpoint
from mmfocal.engine.classifier_checkpoint import convert_official_classifier
from mmfocal.engine.pretrained import convert_official_state_dict, extract_state_dict


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official checkpoint file or URL')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--classifier', action='store_true',
                        help='write an mmpretrain ImageClassifier checkpoint (head and final norm included)')
    args = parser.parse_args(argv)

    from mmengine.runner.checkpoint import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    if args.classifier:
        return write_classifier(checkpoint, args.src, args.dst)
    state = extract_state_dict(checkpoint)
    backbone, arch, report = match_official_backbone(state)
    kept, _ = convert_official_state_dict(state)
    checkpoint = dict(state_dict=kept, meta=dict(source=os.path.basename(args.src), backbone=backbone,
                                                 architecture={k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in arch.items()}))
    save_checkpoint(checkpoint, args.dst)
    print(f'{args.dst}: {len(kept)} {backbone} tensors ({arch}); dropped {len(report["dropped"])} '
          f'(classifier head, final norm, index buffers); the model will initialise '
          f'{len(report["initialised"])}: {", ".join(report["initialised"]) or "none"}')


def write_classifier(official, src, dst):
    checkpoint, dropped = convert_official_classifier(official)
    meta = checkpoint['meta']
    meta['source'] = os.path.basename(src)
    save_checkpoint(checkpoint, dst)
    print(f'{dst}: {len(checkpoint["state_dict"])} tensors of an mmpretrain ImageClassifier ({meta["backbone"]} '
          f'{meta["architecture"]}, {meta["num_classes"]} classes); dropped {len(dropped)} index buffers')


if __name__ == '__main__':
    main()
