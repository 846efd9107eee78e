#!/usr/bin/env bash
# Distributed training on one or more machines, as mmdet's and mmseg's dist_train.sh:
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [tools/train.py options...]
# One process per GPU; without GPUs, NUM_PROCESSES CPU processes over gloo.
# Several machines: NNODES, NODE_RANK, MASTER_ADDR and PORT, as with torchrun.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG NUM_PROCESSES [tools/train.py options...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS="$(cd "$(dirname "$0")" && pwd)"
source "$TOOLS/python.sh"  # sets PYTHON

# mmfocal's compiled CPU attention kernels, built once here rather than by every rank in its
# first step (they wait on one build lock); where they cannot be built, the ranks take PyTorch's.
"$PYTHON" -m mmfocal.models.layers.compiled_kernels --build || true

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"
