#!/usr/bin/env bash
# Installs the pinned OpenMMLab stack into the active virtual environment, or into .venv/.
# Idempotent: a second run installs nothing new. A torch already present is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  PY=.venv/bin/python
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c tools/constraints.txt "$@"; }

stamp=".venv-stamp-$(sha1sum tools/setup_env.sh tools/constraints.txt setup.py | sha1sum | cut -c1-12)"
if [[ -f "$("$PY" -c 'import sys; print(sys.prefix)')/$stamp" ]]; then
  exit 0
fi

# mmengine resolves mmdet::/mmseg:: config paths through pkg_resources, gone in setuptools 82.
pip_install 'setuptools<82' wheel ninja
if "$PY" -c 'import torch' 2>/dev/null; then
  echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  pip_install torch==2.13.0
fi
# opencv-python 4.12 needs numpy 2, which mmcv 2.1 / mmdet 3.3 predate.
pip_install numpy opencv-python mmengine==0.10.7
if ! "$PY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  echo "building mmcv 2.1.0 with its ops (about 10 minutes the first time; cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install --no-build-isolation mmcv==2.1.0
fi
pip_install mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex pycocotools pytest
# Deployment: ONNX export (onnxscript for the torch.export-based exporter) and ONNX Runtime (CPU).
pip_install onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0
pip_install --no-build-isolation --no-deps -e .
"$PY" -c 'import mmcv.ops, mmdet, mmseg, mmfocal' 
touch "$("$PY" -c 'import sys; print(sys.prefix)')/$stamp"
