#!/usr/bin/env bash
# Installs the pinned OpenMMLab stack into the active environment (a virtual environment, else an
# active conda environment), or into .venv/. Idempotent: a second run installs nothing new. A torch
# already present is kept (a GPU user's, for their CUDA), with the torchvision of its release.
#
# Settings (environment variables; `make env-compat` uses them for .venv-compat/):
#   MMFOCAL_VENV         the virtual environment to use (made if missing), whatever is active
#   MMFOCAL_TORCH, MMFOCAL_TORCHVISION   the torch and torchvision installed where none is (2.14.1, 0.29.1)
#   MMFOCAL_ONNX         the ONNX packages' pins (for torch 2.14.1 by default)
#   FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST   passed to mmcv's build: its CUDA ops on a machine without
#                        a GPU, for those architectures (docs/install.md)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${MMFOCAL_VENV:-}" ]]; then
  [[ -x "$MMFOCAL_VENV/bin/python" ]] || python3 -m venv "$MMFOCAL_VENV"
  PY="$MMFOCAL_VENV/bin/python"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [[ -n "${CONDA_PREFIX:-}" ]]; then
  PY="$CONDA_PREFIX/bin/python"
  echo "installing into the active conda environment $CONDA_PREFIX"
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  PY=.venv/bin/python
fi
TORCH=${MMFOCAL_TORCH:-2.14.1} TORCHVISION=${MMFOCAL_TORCHVISION:-0.29.1}
ONNX=${MMFOCAL_ONNX:-onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q -c tools/constraints.txt "$@"; }

settings="$TORCH $TORCHVISION $ONNX ${FORCE_CUDA:-} ${TORCH_CUDA_ARCH_LIST:-}"
stamp=".venv-stamp-$( (sha1sum tools/setup_env.sh tools/constraints.txt tools/mmcv_wheel_cache.py tools/cxx_std20.sh \
  setup.py; echo "$settings") | sha1sum | cut -c1-12)"
if [[ -f "$("$PY" -c 'import sys; print(sys.prefix)')/$stamp" ]]; then
  exit 0
fi

# mmengine resolves mmdet::/mmseg:: config paths through pkg_resources, gone in setuptools 82.
pip_install 'setuptools<82' wheel ninja

# torch and torchvision. mmpretrain imports torchvision, and PyPI's torchvision does not load
# beside the CPU-only torch 2.13.0 file ("operator torchvision::nms does not exist"); torch 2.14.1
# with torchvision 0.29.1 do work together on the CPU (a CUDA build, about 5.5 GB).
torchvision_works() { "$PY" -c 'import torch, torchvision.ops; torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)' 2>/dev/null; }
if ! "$PY" -c 'import torch' 2>/dev/null; then
  pip_install "torch==$TORCH" "torchvision==$TORCHVISION"
elif ! torchvision_works; then
  installed=$("$PY" -c 'import torch; print(torch.__version__)')
  if [[ "$installed" == 2.13.0+cpu ]]; then
    # The CPU file this script installed before it needed torchvision: move to the pinned pair.
    echo "replacing torch $installed (no working torchvision for it) with torch $TORCH + torchvision $TORCHVISION"
    pip_install "torch==$TORCH" "torchvision==$TORCHVISION"
  else
    # A user's own torch is kept: torchvision 0.N+15 is the release made with torch 2.N.
    minor=$(cut -d. -f2 <<<"$installed")
    echo "keeping the installed torch $installed; adding torchvision 0.$((minor + 15)).*"
    pip_install "torch==${installed%%+*}" "torchvision==0.$((minor + 15)).*"
  fi
else
  echo "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)') and its torchvision"
fi
torchvision_works || { echo "torchvision does not run beside this torch (torchvision.ops.nms failed)" >&2; exit 1; }

# opencv-python 4.12 needs numpy 2, which mmcv 2.1 / mmdet 3.3 predate.
pip_install numpy opencv-python mmengine==0.10.7

# mmcv 2.1.0 with its compiled ops, built against the torch installed now. pip's own wheel cache
# would reuse a wheel built against another torch (it keys on the source archive), so the wheel
# is built without it, into a folder keyed on torch's version, CUDA, C++ ABI and the ops built
# (CPU only, or CUDA for which architectures), and installed from there (tools/mmcv_wheel_cache.py).
MMCV=2.1.0
"$PY" tools/mmcv_wheel_cache.py cuda-check || exit 1
ops=$("$PY" tools/mmcv_wheel_cache.py ops)
WHEEL_CACHE=${MMFOCAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmfocal/wheels}
# An mmcv this script installed stays while its key is the running one; another (OpenMMLab's wheel
# for your torch and CUDA) stays where its ops run here, with CUDA kernels where they are wanted.
if ! "$PY" tools/mmcv_wheel_cache.py installed "$MMCV" 2>/dev/null; then
  wheel=$("$PY" tools/mmcv_wheel_cache.py find "$WHEEL_CACHE" "$MMCV") || {
    dir=$("$PY" tools/mmcv_wheel_cache.py dir "$WHEEL_CACHE" "$MMCV")
    echo "building mmcv $MMCV with its ops ($ops) against torch $("$PY" -c 'import torch; print(torch.__version__)') into $dir"
    echo "(about 10 minutes on 2 cores the first time; that folder serves later set-ups with this torch)"
    # torch >= 2.14's headers need C++20; mmcv 2.1.0's setup.py asks for C++17 (tools/cxx_std20.sh).
    compiler=()
    if grep -q 'C++20 or later' "$("$PY" -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')/ATen/ATen.h"; then
      compiler=(CXX="$PWD/tools/cxx_std20.sh" MMFOCAL_REAL_CXX="${CXX:-c++}")
    fi
    # mmcv's setup.py builds CUDA ops where torch sees a GPU or FORCE_CUDA=1, for TORCH_CUDA_ARCH_LIST.
    env ${compiler[@]+"${compiler[@]}"} FORCE_CUDA="${FORCE_CUDA:-0}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-}" \
      MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip wheel --disable-pip-version-check -q \
      --no-cache-dir --no-build-isolation --no-deps -c tools/constraints.txt -w "$dir" "mmcv==$MMCV"
    wheel=$("$PY" tools/mmcv_wheel_cache.py find "$WHEEL_CACHE" "$MMCV")
  }
  echo "installing $wheel"
  if [[ $ops == cpuops ]] && "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    "$PY" tools/mmcv_wheel_cache.py note
  fi
  pip_install --force-reinstall --no-cache-dir "$wheel" --no-deps
  pip_install "$wheel"  # its pure-Python requirements
  "$PY" tools/mmcv_wheel_cache.py mark
  "$PY" tools/mmcv_wheel_cache.py installed "$MMCV" >/dev/null || {
    echo "mmcv $MMCV from $wheel does not load its ops against this torch" >&2; exit 1; }
fi

pip_install mmdet==3.3.0 mmsegmentation==1.2.2 mmpretrain==1.2.0 ftfy regex pycocotools pytest
# Style: `make test` runs ruff (ruff.toml) before the tests.
pip_install ruff==0.17.6
# Deployment: ONNX export (onnxscript for the torch.export-based exporter) and ONNX Runtime (CPU).
pip_install $ONNX
pip_install --no-build-isolation --no-deps -e .
"$PY" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, mmfocal'
# mmfocal's compiled CPU attention kernels, built now rather than in the first training step
# (docs/attention_kernels.md). Where they cannot be built the attention takes PyTorch's kernels
# and the first use tries again: a note, not a failed set-up.
"$PY" -m mmfocal.models.layers.compiled_kernels --build ||
  echo "note: mmfocal's compiled CPU attention kernels were not built (the line above says why); the set-up is complete"
touch "$("$PY" -c 'import sys; print(sys.prefix)')/$stamp"
