"""Convert an official Focal Transformer ImageNet checkpoint to a backbone-only mmfocal file.

    python tools/convert_official_ckpt.py focal-tiny-is224-ws7.pth focal-tiny-backbone.pth

The output holds ``state_dict`` (backbone tensors, classifier head, final norm and index buffers
dropped) and ``meta``; use it as ``init_cfg=dict(type='Pretrained', checkpoint=DST)``. Loading the
official file directly works as well: this tool is for those who want a file.
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import mmfocal  # noqa: E402,F401  (safe checkpoint loading)
from mmfocal.checkpoint import (convert_official_state_dict, extract_state_dict,  # noqa: E402
                                infer_architecture, match_state_dict)
from mmfocal.focal_transformer import FocalTransformer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official checkpoint file or URL')
    parser.add_argument('dst', help='output file')
    args = parser.parse_args(argv)

    from mmengine.runner.checkpoint import CheckpointLoader
    state = extract_state_dict(CheckpointLoader.load_checkpoint(args.src, map_location='cpu'))
    arch = infer_architecture(state)
    report = match_state_dict(FocalTransformer(**arch), state)
    kept, _ = convert_official_state_dict(state)
    checkpoint = dict(state_dict=kept, meta=dict(source=os.path.basename(args.src),
                                                 architecture={k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in arch.items()}))
    out_dir = os.path.dirname(os.path.abspath(args.dst))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix='.tmp-', suffix='.pth', delete=False) as tmp:
        torch.save(checkpoint, tmp)
    os.replace(tmp.name, args.dst)
    print(f'{args.dst}: {len(kept)} backbone tensors ({arch}); dropped {len(report["dropped"])} '
          f'(classifier head, final norm, index buffers); the model will initialise '
          f'{len(report["initialised"])}: {", ".join(report["initialised"]) or "none"}')


if __name__ == '__main__':
    main()
