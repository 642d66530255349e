#!/usr/bin/env bash
# CorrFlow pretraining on a 2-core CPU, judged on held-out video: the commands behind the README's
# "Pretraining on a CPU" curves. Trains experiment=corrflow_cpu on the unlabelled sample videos plus
# the frames of the five STM training sequences, with the held-out monitor on the five STM test
# sequences (CRW protocol, short side 160), once per encoder initialisation, side by side (one
# thread each); then scores every kept checkpoint under the CorrFlow protocol too, and draws the curves.
#
#   bash docs/experiments/pretrain_cpu_davis2016_dev.sh [DATA=../shared/data] [OUT=logs/pretrain_cpu] [STEPS=700]
#   PHASES="train" / "score" / "plot" runs a part (default: all three).
set -euo pipefail
set -f  # the [a,b] Hydra lists below are not globs
DATA=${DATA:-../shared/data}
OUT=${OUT:-logs/pretrain_cpu}
STEPS=${STEPS:-700}
INITS=${INITS:-"pytorch torchvision"}
PHASES=${PHASES:-"train score plot"}
TEST='[car-shadow,drift-chicane,kite-surf,libby,scooter-black]'
DAVIS="$(cd "$DATA/davis2016-dev" && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/train_frames"
for s in bmx-trees breakdance car-roundabout dance-twirl paragliding-launch; do
  ln -sfn "$DAVIS/JPEGImages/480p/$s" "$OUT/train_frames/$s"
done
printf '%s\n%s\n' "$(cd "$DATA/videos" && pwd)" "$(cd "$OUT/train_frames" && pwd)" > "$OUT/unlabelled.txt"

if [[ " $PHASES " == *" train "* ]]; then
  for init in $INITS; do
    python tools/train.py experiment=corrflow_cpu data.root="$OUT/unlabelled.txt" model.net.encoder.init=$init \
      data.val_root="$DAVIS" "data.val_sequences=$TEST" trainer.max_steps=$STEPS callbacks.progress_bar=null +trainer.enable_progress_bar=false \
      hydra.run.dir="$OUT/$init" > "$OUT/$init.out" 2>&1 &
  done
  wait
fi

# The CorrFlow protocol on the same resized held-out copy, for every kept checkpoint (and the start).
if [[ " $PHASES " == *" score "* ]]; then
  COPY=$(ls -d .cache/heldout/davis2016-dev-s160-* | head -n 1)
  for init in $INITS; do
    for ckpt in "$OUT/$init"/checkpoints/step*.ckpt; do
      python tools/propagate.py task=davis2016 data.root="$COPY" features=checkpoint ckpt="$ckpt" protocol=corrflow \
        progress=false overlay=null output_dir="$OUT/score_corrflow/$init/$(basename "$ckpt" .ckpt)" > /dev/null
    done
  done
fi
