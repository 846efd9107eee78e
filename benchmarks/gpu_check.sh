#!/usr/bin/env bash
# benchmarks/gpu_check.py on a fresh GPU machine that has torch but not OpenMMLab (docs/gpu.md):
# installs the wheels carried in .whl/ into /tmp/site, builds mmcv from the sdist carried there
# when mmcv.ops is missing (its CPU ops only, about 2 minutes on 16 cores; MMCV_CUDA=1 builds its
# CUDA ops too, which the Mask R-CNN sections need, for TORCH_CUDA_ARCH_LIST, 9.0 by default), then
# runs the check with the arguments given:
#   bash benchmarks/gpu_check.sh --out $OUT/gpu_report.md
set -eo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c 'import mmcv.ops' 2>/dev/null && compgen -G ".whl/mmcv-*.tar.gz" >/dev/null; then
  start=$(date +%s)
  (
    if [ "${MMCV_CUDA:-0}" = 1 ]; then export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}";
    else export CUDA_VISIBLE_DEVICES=; fi  # torch then sees no GPU: mmcv builds its CPU ops alone
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
      --no-cache-dir --target /tmp/site .whl/mmcv-*.tar.gz
  )
  echo "mmcv built in $(( $(date +%s) - start )) s"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# mmfocal from this checkout, where it is not installed (the script imports the package)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHONUNBUFFERED=1 exec "$PY" benchmarks/gpu_check.py "$@"
