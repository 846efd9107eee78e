#!/usr/bin/env bash
# The whole thing on a laptop, on data made on the spot: `make demo` (after `make env`).
#   1. tools/make_demo_data.py writes the COCO-, ADE20K- and ImageNet-format shape sets under
#      data/demo/;
#   2. pretrains the demo classifier (configs/cls/focal_t_demo.py: mmpretrain's ImageClassifier
#      with the demo-sized Focal backbone) on the ImageNet-format set and evaluates it with
#      tools/test.py (top-1);
#   3. fine-tunes the demo Mask R-CNN from that classifier's checkpoint
#      (configs/det/mask_rcnn_focal_t_demo_pretrained.py) and evaluates it (COCO bbox and segm
#      mAP), drawing its predictions;
#   4. trains the same detector from scratch on the same budget
#      (configs/det/mask_rcnn_focal_t_demo.py) and evaluates it the same way;
#   5. trains and evaluates the demo UperNet segmenter from scratch
#      (configs/seg/upernet_focal_t_demo.py, mIoU);
#   6. draws the learning curves (tools/analysis/plot_curves.py; both detectors in one picture)
#      and what the fine-tuned detector's focal attention looks at for one query on one val
#      picture (tools/analysis/focal_attention_map.py);
#   7. prints the metrics, the whole demo's wall time and where the checkpoints and the pictures
#      (PNG) are.
# Outputs go to work_dirs/demo/ (DEMO_DIR overrides). Each run starts afresh; DEMO_RESUME=1
# continues an interrupted run from its newest checkpoints instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=tools
source "$TOOLS/python.sh"  # sets PYTHON
DEMO_DIR=${DEMO_DIR:-work_dirs/demo}
CLS_CONFIG=configs/cls/focal_t_demo.py
DET_CONFIG=configs/det/mask_rcnn_focal_t_demo.py
DET_PRETRAINED_CONFIG=configs/det/mask_rcnn_focal_t_demo_pretrained.py
SEG_CONFIG=configs/seg/upernet_focal_t_demo.py
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}  # keep the log to the training progress
# Half the cores for compute threads (1 on a 2-core machine), the rest for data loading and
# everything else. OpenMP threads that must share a core with anything busy wait on each other:
# on 2 cores with one other busy process, 2 threads ran small matrix products 18x slower than 1.
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores > 3 ? cores / 2 : 1 ))}

banner() { printf '\n==== %s ====\n' "$*"; }
minutes_since() { echo $(( (SECONDS - $1 + 30) / 60 )); }
# Sets cpu_now to the CPU seconds (user + system) of the finished child processes so far: bash's
# `times`, second line. `times` must run in this shell, not in a pipeline's or $(...)'s subshell
# (whose children are none): its output goes through a file, and the result into a variable.
times_file=$(mktemp)
trap 'rm -f "$times_file"' EXIT
cpu_now=0
read_cpu_seconds() {
  times > "$times_file"
  cpu_now=$(tail -n1 "$times_file" | awk '{ total = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] } printf "%.0f", total }')
}
# Each step's time: wall clock, CPU time of its processes (less touched by other jobs on a shared
# machine than the wall clock: on an idle one the wall clock is about this or less, data loading
# running beside the compute) and the 1-minute load average when it ended.
step_times=()
step_wall=0
step_cpu=0
start_step() { step_wall=$SECONDS; read_cpu_seconds; step_cpu=$cpu_now; }
end_step() {
  read_cpu_seconds
  local wall=$(( SECONDS - step_wall )) cpu=$(( cpu_now - step_cpu ))
  step_times+=("$(awk -v name="$1:" -v wall="$wall" -v cpu="$cpu" -v load="$(uptime | sed 's/.*load average[s]*: //; s/,.*//')" \
    'BEGIN { printf "  %-26s %5.1f min wall, %5.1f min CPU, load %s", name, wall / 60, cpu / 60, load }')")
}

resume=()
if [[ "${DEMO_RESUME:-0}" == 1 ]]; then
  resume=(--resume)
else
  rm -rf "$DEMO_DIR/cls" "$DEMO_DIR/det_pretrained" "$DEMO_DIR/det" "$DEMO_DIR/seg"
fi
mkdir -p "$DEMO_DIR"

banner "1/7 demo data -> data/demo"
start_step
"$PYTHON" "$TOOLS/make_demo_data.py" --out data/demo
end_step "data"

# train_and_test NAME CONFIG [OPTION...]: trains into $DEMO_DIR/NAME (the options go to
# train.py's --cfg-options), then evaluates its last checkpoint, drawing the predictions of the
# detectors and the segmenter.
train_and_test() {
  local name=$1 config=$2 work_dir="$DEMO_DIR/$1"
  shift 2
  local options=()
  if (( $# )); then options=(--cfg-options "$@"); fi
  "$PYTHON" "$TOOLS/train.py" "$config" --work-dir "$work_dir" ${resume[@]+"${resume[@]}"} \
    ${options[@]+"${options[@]}"} 2>&1 | tee "$DEMO_DIR/$name-train.log"
  local checkpoint show=()
  checkpoint=$(cat "$work_dir/last_checkpoint")
  if [[ $name != cls ]]; then show=(--show-dir "$work_dir/predictions"); fi
  banner "evaluating $checkpoint"
  "$PYTHON" "$TOOLS/test.py" "$config" "$checkpoint" --work-dir "$work_dir" ${show[@]+"${show[@]}"} \
    2>&1 | tee "$DEMO_DIR/$name-test.log"
}

banner "2/7 pretraining the demo classifier (ImageNet-format shapes, demo-sized Focal backbone)"
start_step
train_and_test cls "$CLS_CONFIG"
end_step "classifier"
cls_checkpoint=$(cat "$DEMO_DIR/cls/last_checkpoint")

banner "3/7 fine-tuning the demo detector (Mask R-CNN) from the classifier's checkpoint"
start_step
train_and_test det_pretrained "$DET_PRETRAINED_CONFIG" "model.backbone.init_cfg.checkpoint=$cls_checkpoint"
end_step "detector, fine-tuned"

banner "4/7 training the same detector from scratch, same schedule and seed"
start_step
train_and_test det "$DET_CONFIG"
end_step "detector, from scratch"

banner "5/7 training the demo segmenter (UperNet, demo-sized Focal backbone, from scratch)"
start_step
train_and_test seg "$SEG_CONFIG"
end_step "segmenter"

banner "6/7 learning curves and an attention map"
start_step
"$PYTHON" "$TOOLS/analysis/plot_curves.py" "$DEMO_DIR/cls" --labels "classifier (demo)" \
  --title "demo classifier: $CLS_CONFIG" --out "$DEMO_DIR/cls_curves.png"
"$PYTHON" "$TOOLS/analysis/plot_curves.py" "$DEMO_DIR/det_pretrained" "$DEMO_DIR/det" \
  --labels "Mask R-CNN from the demo classifier" "Mask R-CNN from scratch" \
  --title "demo detector: pretrained backbone against scratch, same schedule" --out "$DEMO_DIR/det_curves.png"
"$PYTHON" "$TOOLS/analysis/plot_curves.py" "$DEMO_DIR/seg" --labels "UperNet (demo)" \
  --title "demo segmenter: $SEG_CONFIG" --out "$DEMO_DIR/seg_curves.png"
# A query on the small square at the bottom left of val picture 000001, in the first block: the
# fine-tuned detector's own weights over the query's window, the rolled neighbours (those left of
# the map wrap around to its right edge) and the pooled windows (some beyond the map).
"$PYTHON" "$TOOLS/analysis/focal_attention_map.py" "$DET_PRETRAINED_CONFIG" data/demo/coco/val/000001.jpg \
  --point 15 110 --checkpoint "$(cat "$DEMO_DIR/det_pretrained/last_checkpoint")" --stage 0 --block 0 \
  --out "$DEMO_DIR/attention_map.png"
end_step "pictures"

# The metric lines tools/test.py printed at the end ("  coco/bbox_mAP: 0.61").
metric() { grep -E "^  $2: " "$DEMO_DIR/$1-test.log" | tail -n1 | sed 's/^ *//'; }
pngs() { find "$1" -name '*.png' | wc -l | tr -d ' '; }

banner "7/7 results"
echo "classification, demo val set (colour says nothing about the class there):"
echo "  $(metric cls accuracy/top1)"
echo "  $(metric cls colour/top1_atypical)   (the pictures whose shape is not in its class's typical colour)"
echo "detection, demo val set (colour is a cue there: 3 objects in 4 in their class's typical colour):"
echo "  fine-tuned from the classifier | from scratch (same schedule and seed)"
for key in coco/bbox_mAP coco/bbox_mAP_50 coco/segm_mAP coco/segm_mAP_50; do
  printf '  %-18s %-8s | %s\n' "$key:" "$(metric det_pretrained "$key" | sed 's/^.*: //')" \
    "$(metric det "$key" | sed 's/^.*: //')"
done
echo "segmentation, demo val set:"
for key in mIoU aAcc; do
  echo "  $(metric seg "$key")"
done
echo "checkpoints:"
echo "  classifier:              $cls_checkpoint"
echo "  detector (fine-tuned):   $(cat "$DEMO_DIR/det_pretrained/last_checkpoint")"
echo "  detector (from scratch): $(cat "$DEMO_DIR/det/last_checkpoint")"
echo "  segmenter:               $(cat "$DEMO_DIR/seg/last_checkpoint")"
echo "visualised predictions (PNG, ground truth beside prediction):"
echo "  detector (fine-tuned):   $DEMO_DIR/det_pretrained/predictions ($(pngs "$DEMO_DIR/det_pretrained/predictions") files)"
echo "  detector (from scratch): $DEMO_DIR/det/predictions ($(pngs "$DEMO_DIR/det/predictions") files)"
echo "  segmenter:               $DEMO_DIR/seg/predictions ($(pngs "$DEMO_DIR/seg/predictions") files)"
echo "learning curves (PNG):"
echo "  classifier: $DEMO_DIR/cls_curves.png"
echo "  detectors:  $DEMO_DIR/det_curves.png"
echo "  segmenter:  $DEMO_DIR/seg_curves.png"
echo "focal attention of one query, fine-tuned detector (PNG): $DEMO_DIR/attention_map.png"
echo "logs: $DEMO_DIR/{cls,det_pretrained,det,seg}-{train,test}.log"
echo "time of each step (training and test):"
printf '%s\n' "${step_times[@]}"
read_cpu_seconds
echo "the whole demo took $(minutes_since 0) minutes (wall clock; $(( (cpu_now + 30) / 60 )) min CPU; $(uptime | sed 's/.*load/load/'))"
