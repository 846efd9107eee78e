#!/usr/bin/env bash
# The whole thing on a laptop, on data made on the spot: `make demo` (after `make env`).
#   1. tools/make_demo_data.py writes the COCO- and ADE20K-format shape sets under data/demo/;
#   2. trains the demo Mask R-CNN (configs/det/mask_rcnn_focal_t_demo.py) from scratch and
#      evaluates it with tools/test.py (COCO bbox and segm mAP), drawing its predictions;
#   3. the same for the demo UperNet segmenter (configs/seg/upernet_focal_t_demo.py, mIoU);
#   4. draws both models' learning curves (tools/analysis/plot_curves.py) and what the trained
#      detector's focal attention looks at for one query on one val picture
#      (tools/analysis/focal_attention_map.py);
#   5. prints the metrics and where the checkpoints and the pictures (PNG) are.
# Outputs go to work_dirs/demo/ (DEMO_DIR overrides). Each run starts afresh; DEMO_RESUME=1
# continues an interrupted run from its newest checkpoints instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=tools
source "$TOOLS/python.sh"  # sets PYTHON
DEMO_DIR=${DEMO_DIR:-work_dirs/demo}
DET_CONFIG=configs/det/mask_rcnn_focal_t_demo.py
SEG_CONFIG=configs/seg/upernet_focal_t_demo.py
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}  # keep the log to the training progress
# Half the cores for compute threads (1 on a 2-core machine), the rest for data loading and
# everything else. OpenMP threads that must share a core with anything busy wait on each other:
# on 2 cores with one other busy process, 2 threads ran small matrix products 18x slower than 1.
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores > 3 ? cores / 2 : 1 ))}

banner() { printf '\n==== %s ====\n' "$*"; }

resume=()
if [[ "${DEMO_RESUME:-0}" == 1 ]]; then
  resume=(--resume)
else
  rm -rf "$DEMO_DIR/det" "$DEMO_DIR/seg"
fi
mkdir -p "$DEMO_DIR"

banner "1/5 demo data -> data/demo"
"$PYTHON" "$TOOLS/make_demo_data.py" --out data/demo

# train_and_test NAME CONFIG: trains into $DEMO_DIR/NAME, then evaluates its last checkpoint.
train_and_test() {
  local name=$1 config=$2 work_dir="$DEMO_DIR/$1"
  "$PYTHON" "$TOOLS/train.py" "$config" --work-dir "$work_dir" ${resume[@]+"${resume[@]}"} \
    2>&1 | tee "$DEMO_DIR/$name-train.log"
  local checkpoint
  checkpoint=$(cat "$work_dir/last_checkpoint")
  banner "evaluating $checkpoint"
  "$PYTHON" "$TOOLS/test.py" "$config" "$checkpoint" --work-dir "$work_dir" \
    --show-dir "$work_dir/predictions" 2>&1 | tee "$DEMO_DIR/$name-test.log"
}

banner "2/5 training the demo detector (Mask R-CNN, demo-sized Focal backbone, from scratch)"
det_start=$SECONDS
train_and_test det "$DET_CONFIG"
det_minutes=$(( (SECONDS - det_start + 30) / 60 ))

banner "3/5 training the demo segmenter (UperNet, demo-sized Focal backbone, from scratch)"
seg_start=$SECONDS
train_and_test seg "$SEG_CONFIG"
seg_minutes=$(( (SECONDS - seg_start + 30) / 60 ))

banner "4/5 learning curves and an attention map"
"$PYTHON" "$TOOLS/analysis/plot_curves.py" "$DEMO_DIR/det" --labels "Mask R-CNN (demo)" \
  --title "demo detector: $DET_CONFIG" --out "$DEMO_DIR/det_curves.png"
"$PYTHON" "$TOOLS/analysis/plot_curves.py" "$DEMO_DIR/seg" --labels "UperNet (demo)" \
  --title "demo segmenter: $SEG_CONFIG" --out "$DEMO_DIR/seg_curves.png"
# A query on the small square at the bottom left of val picture 000001, in the first block: the
# trained detector's own weights over the query's window, the rolled neighbours (those left of the
# map wrap around to its right edge) and the pooled windows (some beyond the map).
"$PYTHON" "$TOOLS/analysis/focal_attention_map.py" "$DET_CONFIG" data/demo/coco/val/000001.jpg \
  --point 15 110 --checkpoint "$(cat "$DEMO_DIR/det/last_checkpoint")" --stage 0 --block 0 \
  --out "$DEMO_DIR/attention_map.png"

# The metric lines tools/test.py printed at the end ("  coco/bbox_mAP: 0.61").
metric() { grep -E "^  $2: " "$DEMO_DIR/$1-test.log" | tail -n1 | sed 's/^ *//'; }
pngs() { find "$1" -name '*.png' | wc -l | tr -d ' '; }

banner "5/5 results"
echo "detection, demo val set (${det_minutes} min train + test):"
for key in coco/bbox_mAP coco/bbox_mAP_50 coco/segm_mAP coco/segm_mAP_50; do
  echo "  $(metric det "$key")"
done
echo "segmentation, demo val set (${seg_minutes} min train + test):"
for key in mIoU aAcc; do
  echo "  $(metric seg "$key")"
done
echo "checkpoints:"
echo "  detector:  $(cat "$DEMO_DIR/det/last_checkpoint")"
echo "  segmenter: $(cat "$DEMO_DIR/seg/last_checkpoint")"
echo "visualised predictions (PNG, ground truth beside prediction):"
echo "  detector:  $DEMO_DIR/det/predictions ($(pngs "$DEMO_DIR/det/predictions") files)"
echo "  segmenter: $DEMO_DIR/seg/predictions ($(pngs "$DEMO_DIR/seg/predictions") files)"
echo "learning curves (PNG):"
echo "  detector:  $DEMO_DIR/det_curves.png"
echo "  segmenter: $DEMO_DIR/seg_curves.png"
echo "focal attention of one query, trained detector (PNG): $DEMO_DIR/attention_map.png"
echo "logs: $DEMO_DIR/{det,seg}-{train,test}.log"
