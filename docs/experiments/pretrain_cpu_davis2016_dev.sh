#!/usr/bin/env bash
# CorrFlow pretraining on a 2-core CPU, judged on held-out video: the commands behind docs/results.md's
# "Pretraining on a CPU" curves. Trains experiment=corrflow_cpu on the unlabelled sample videos plus
# the frames of the five STM training sequences, with the held-out monitor on the five STM test
# sequences (CRW protocol, short side 160), once per encoder initialisation, side by side (one
# thread each); then scores every kept checkpoint under the CorrFlow protocol too, and draws the curves.
#
#   bash docs/experiments/pretrain_cpu_davis2016_dev.sh [DATA=../shared/data] [OUT=logs/pretrain_cpu] [STEPS=700]
#   PHASES="train" / "score" / "plot" / "final" runs a part (default: train score plot final).
#   final: the best checkpoint (checkpoints/best.ckpt of the release-init run) and its untrained
#   start under the CRW protocol at short side 240 (the transfer to a larger scale), and the flow
#   end-point error of docs/motion.md.
set -euo pipefail
set -f  # the [a,b] Hydra lists below are not globs
DATA=${DATA:-../shared/data}
OUT=${OUT:-logs/pretrain_cpu}
STEPS=${STEPS:-700}
INITS=${INITS:-"pytorch torchvision"}
PHASES=${PHASES:-"train score plot final"}
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

COPY=$(find .cache/heldout -maxdepth 1 -name 'davis2016-dev-s160-*' 2>/dev/null | head -n 1)
run_propagate() {  # <output dir> <overrides...>: label propagation on the monitor's resized copy
  local out=$1; shift
  [[ -f "$out/scores/global_results-val.csv" ]] || python tools/propagate.py task=davis2016 data.root="$COPY" \
    progress=false overlay=null output_dir="$out" "$@" > /dev/null
}

# The CorrFlow protocol on the same resized held-out copy, for every kept checkpoint (and the
# untrained start), and the reference lines: Lab and ImageNet Lite0 under both protocols.
if [[ " $PHASES " == *" score "* ]]; then
  for init in $INITS; do
    run_propagate "$OUT/$init/heldout_corrflow/step0000000" features=random features.extractor.init=$init protocol=corrflow
    set +f
    ckpts=("$OUT/$init"/checkpoints/step*.ckpt)
    set -f
    for ckpt in "${ckpts[@]}"; do
      [[ -f "$ckpt" ]] || continue
      run_propagate "$OUT/$init/heldout_corrflow/$(basename "$ckpt" .ckpt)" features=checkpoint ckpt="$ckpt" protocol=corrflow
    done
  done
  for f in lab imagenet; do for p in crw corrflow; do run_propagate "$OUT/ref/${f}_$p" features=$f protocol=$p; done; done
fi

if [[ " $PHASES " == *" plot "* ]]; then
  ref() { tail -n 1 "$OUT/ref/$1/scores/global_results-val.csv" | cut -d, -f1; }
  for p in crw corrflow; do
    dir=heldout; [[ $p == corrflow ]] && dir=heldout_corrflow
    python tools/plot_training.py $(for i in $INITS; do echo "$OUT/$i"; done) --heldout --heldout-dir $dir \
      --labels $(for i in $INITS; do echo "corrflow_cpu,init=$i"; done) \
      --ref "Lab=$(ref lab_$p)" --ref "ImageNet Lite0=$(ref imagenet_$p)" \
      --title "held-out J&F (5 DAVIS-2016 dev sequences, short side 160), $p protocol" -o "$OUT/heldout_$p.png"
  done
  for i in $INITS; do python tools/plot_training.py "$OUT/$i" -o "$OUT/curves_$i.png"; done
fi

if [[ " $PHASES " == *" final "* ]]; then
  BEST="$OUT/pytorch/checkpoints/best.ckpt"
  COPY240=$(python -c "from corrflow.data.vos.davis_resized import resized_davis as r; print(r('$DAVIS', '.cache/heldout/davis2016-dev-test-s240', short_side=240, sequences='$TEST'.strip('[]').split(',')).root)")
  at240() {  # <name> <overrides...>: CRW label propagation on the test sequences at short side 240
    local name=$1; shift
    [[ -f "$OUT/final240_$name/scores/global_results-val.csv" ]] || python tools/propagate.py task=davis2016 \
      data.root="$COPY240" protocol=crw progress=false overlay=null output_dir="$OUT/final240_$name" "$@" > /dev/null
  }
  at240 random features=random features.extractor.init=pytorch &
  at240 checkpoint features=checkpoint ckpt="$BEST" &
  python tools/benchmark.py flow epe --frames "$DAVIS/JPEGImages/480p" --every 20 --limit 20 --features random checkpoint \
    --ckpt "$BEST" > "$OUT/flow_epe.txt"
  wait
  for f in random checkpoint; do printf '%s ' "$f"; tail -n 1 "$OUT/final240_$f/scores/global_results-val.csv"; done
  cat "$OUT/flow_epe.txt"
fi
