#!/usr/bin/env bash
# Training as a SLURM job, as mmdet's and mmseg's slurm_train.sh:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#     bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options...]
# One task per GPU. On a CPU-only partition set GPUS_PER_NODE=0: tasks then train over gloo.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS="$(cd "$(dirname "$0")" && pwd)"
source "$TOOLS/python.sh"  # sets PYTHON
GRES=()
if [[ "$GPUS_PER_NODE" -gt 0 ]]; then
  GRES=(--gres="gpu:$GPUS_PER_NODE" --ntasks-per-node="$GPUS_PER_NODE")
fi

# mmfocal's compiled CPU attention kernels, built once here rather than by every rank in its
# first step (they wait on one build lock); where they cannot be built, the ranks take PyTorch's.
"$PYTHON" -m mmfocal.models.layers.compiled_kernels --build || true

set -x
# shellcheck disable=SC2086  # SRUN_ARGS holds several srun options
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    ${GRES[@]+"${GRES[@]}"} \
    --ntasks="$GPUS" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
