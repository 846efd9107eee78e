"""Convert a PaddleViT Focal Transformer checkpoint (.pdparams) to an official-format .pth file.

    python tools/convert_paddle_ckpt.py focal_tiny_patch4_window7_224.pdparams focal-tiny-is224-ws7.pth

The output is what the authors' own checkpoint held, ``{'model': state_dict}`` with the official
parameter names (classifier head, final norm and index buffers included), so it goes wherever an
official file goes: ``init_cfg=dict(type='Pretrained', checkpoint=DST)``,
tools/convert_official_ckpt.py. The .pdparams file is read as data only (numpy arrays; a file
holding anything else is refused without running it); see mmfocal/engine/pdparams.py.
``init_cfg`` takes the .pdparams file directly as well: this tool is for those who want a .pth.
"""
import argparse

import mmfocal  # noqa: F401  (safe checkpoint loading)
from mmfocal.apis import convert_paddle_checkpoint
from mmfocal.cli import exit_on_error


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='PaddleViT .pdparams file')
    parser.add_argument('dst', help='output .pth file')
    args = parser.parse_args(argv)
    print(convert_paddle_checkpoint(args.src, args.dst))


if __name__ == '__main__':
    main()
