#!/usr/bin/env bash
# OSVOS on ../shared/data/davis2016-dev, the measurements docs/osvos.md asks for
# (not run yet: they need a GPU or many CPU hours). From the repository root:
#
#   CORRFLOW_CKPT=logs/corrflow/runs/<run>/checkpoints/final.ckpt bash docs/experiments/osvos_davis2016_dev.sh
#
# The split (the same as STM's): parents and contour branches train on the 5 train sequences, J&F
# is measured on the 5 test sequences, each video one-shot fine-tuned on its first frame.
#   train: bmx-trees breakdance car-roundabout dance-twirl paragliding-launch
#   test:  car-shadow drift-chicane kite-surf libby scooter-black
# For each start (random, the corrflow checkpoint, ImageNet Lite0): a parent (experiment=osvos_parent)
# and a contour branch (experiment=osvos_contour), then tools/propagate.py with and without boundary
# snapping; for one parent ($CURVE_START), J&F against the one-shot steps. Writes, under $OUT:
#   table.md                J&F, J, F per start, with and without snapping; one-shot seconds a video, s a frame
#   curve.md                J&F, J, F and seconds against the one-shot steps ($CURVE_START's parent)
#   osvos_steps_curve.png   J&F against one-shot fine-tuning steps (copy to docs/ for docs/results.md)
# Environment: OUT (default logs/osvos_dev), STEPS (offline training steps, default 20000),
# ONESHOT_STEPS (default: the method's), CURVE_STEPS (default "0 25 50 100 200 500 1000 2000"), CURVE_START
# (whose parent the curve fine-tunes, default imagenet), DEVICE (auto), STARTS (default "random
# corrflow imagenet"), PHASES (default "train propagate curve report": run a part, e.g. two starts in
# two processes, then PHASES=report), EXTRA_FINETUNE / EXTRA_PROPAGATE (more overrides, space-separated).
#
# The CPU-budget table of docs/results.md (2-core CPU, one thread a process) is this script with
#   STEPS=300 EXTRA_FINETUNE="data.size=[128,128] data.batch_size=4 data.num_workers=0 trainer=cpu" \
#   EXTRA_PROPAGATE="method.short_side=128" ONESHOT_STEPS=100 OUT=<folder> CORRFLOW_CKPT=<the STM table's checkpoint>
# (its parts were run side by side, e.g. STARTS=imagenet PHASES="train propagate curve" next to
# STARTS=corrflow PHASES="train propagate", then PHASES=report).
set -euo pipefail
DATA=${DATA:-../shared/data/davis2016-dev}
OUT=${OUT:-logs/osvos_dev}
STEPS=${STEPS:-20000}
DEVICE=${DEVICE:-auto}
CURVE_STEPS=${CURVE_STEPS:-"0 25 50 100 200 500 1000 2000"}
CURVE_START=${CURVE_START:-imagenet}
STARTS=${STARTS:-"random corrflow imagenet"}
PHASES=${PHASES:-"train propagate curve report"}
phase() { [[ " $PHASES " == *" $1 "* ]]; }
TRAIN='[bmx-trees,breakdance,car-roundabout,dance-twirl,paragliding-launch]'
TEST='[car-shadow,drift-chicane,kite-surf,libby,scooter-black]'
: "${CORRFLOW_CKPT:?set CORRFLOW_CKPT to a corrflow pretraining checkpoint (tools/train.py)}"
mkdir -p "$OUT"
DATA_ARGS=(data.root="$DATA" data.year=2016 data.split=dev "data.sequences=$TRAIN")
TASK_ARGS=(task=davis2016 data.root="$DATA" task.dataset.split=dev "task.dataset.sequences=$TEST" device="$DEVICE" progress=false)
read -r -a XF <<< "${EXTRA_FINETUNE:-}"
read -r -a XP <<< "${EXTRA_PROPAGATE:-}"
TASK_ARGS+=("${XP[@]}")
ONESHOT=()
[[ -n "${ONESHOT_STEPS:-}" ]] && ONESHOT=(method.finetune.steps="$ONESHOT_STEPS")

declare -A INIT=([random]=random [corrflow]="$CORRFLOW_CKPT" [imagenet]=imagenet)
for start in $STARTS; do
  if phase train; then
    for exp in osvos_parent osvos_contour; do
      run="$OUT/$exp-$start"
      [[ -f "$run/checkpoints/final.ckpt" ]] && continue
      ckpt_args=()
      [[ -f "$run/checkpoints/last.ckpt" ]] && ckpt_args=(ckpt_path="$run/checkpoints/last.ckpt")  # resume
      python tools/finetune.py experiment=$exp model.backbone.init="${INIT[$start]}" "${DATA_ARGS[@]}" \
        trainer.max_steps="$STEPS" hydra.run.dir="$run" "${ckpt_args[@]}" "${XF[@]}"
    done
  fi
  if phase propagate; then
    parent="$OUT/osvos_parent-$start/checkpoints/final.ckpt"
    contour="$OUT/osvos_contour-$start/checkpoints/final.ckpt"
    python tools/propagate.py "${TASK_ARGS[@]}" method=osvos ckpt="$parent" "${ONESHOT[@]}" \
      output_dir="$OUT/propagate/$start" hydra.run.dir="$OUT/propagate/$start/hydra" 2>&1 | tee "$OUT/propagate-$start.log"
    python tools/propagate.py "${TASK_ARGS[@]}" method=osvos ckpt="$parent" "${ONESHOT[@]}" \
      method.boundary_snapping=true method.contour_ckpt="$contour" \
      output_dir="$OUT/propagate/$start-snap" hydra.run.dir="$OUT/propagate/$start-snap/hydra" 2>&1 | tee "$OUT/propagate-$start-snap.log"
  fi
done
if phase curve; then
  for s in $CURVE_STEPS; do
    python tools/propagate.py "${TASK_ARGS[@]}" method=osvos ckpt="$OUT/osvos_parent-$CURVE_START/checkpoints/final.ckpt" \
      method.finetune.steps="$s" overlay=null output_dir="$OUT/curve/steps$s" hydra.run.dir="$OUT/curve/steps$s/hydra" 2>&1 | tee "$OUT/curve-steps$s.log"
  done
fi
phase report || exit 0

OUT="$OUT" CURVE_STEPS="$CURVE_STEPS" CURVE_START="$CURVE_START" STARTS="$STARTS" python - <<'PY'
import csv, json, os, re
from pathlib import Path
out = Path(os.environ["OUT"])
def scores(d):
    with open(d / "scores" / "global_results-dev.csv") as f:
        return next(csv.DictReader(f))
def timing(log, results):
    text = log.read_text() if log.is_file() else ""
    tune = [float(x) for x in re.findall(r"one-shot fine-tuning: .* in ([0-9.]+) s", text)]
    done = [json.loads(p.read_text()) for p in sorted((results / "results").glob("*.done"))]
    frames, secs = sum(d["frames"] for d in done), sum(d["seconds"] for d in done)
    per_frame = (secs - sum(tune)) / max(frames - len(done), 1)
    return (sum(tune) / len(tune) if tune else float("nan")), per_frame
rows = ["| start | snapping | J&F | J | F | one-shot s/video | s/frame (inference) |", "|---|---|---|---|---|---|---|"]
for start in os.environ["STARTS"].split():
    for tag, snap in ((start, "no"), (f"{start}-snap", "yes")):
        s = scores(out / "propagate" / tag)
        tune, frame = timing(out / f"propagate-{tag}.log", out / "propagate" / tag)
        rows.append(f"| {start} | {snap} | {float(s['J&F-Mean']):.3f} | {float(s['J-Mean']):.3f} | {float(s['F-Mean']):.3f} | {tune:.1f} | {frame:.3f} |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
steps = [int(s) for s in os.environ["CURVE_STEPS"].split()]
if not all((out / "curve" / f"steps{n}" / "scores").is_dir() for n in steps):
    print(f"no curve under {out / 'curve'} (run without PHASES=curve): table.md only")
    raise SystemExit(0)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = ["| one-shot steps | J&F | J | F | one-shot s/video | s/frame (inference) |", "|---|---|---|---|---|---|"]
jf = []
for n in steps:
    s = scores(out / "curve" / f"steps{n}")
    tune, frame = timing(out / f"curve-steps{n}.log", out / "curve" / f"steps{n}")
    jf.append(float(s["J&F-Mean"]))
    rows.append(f"| {n} | {jf[-1]:.3f} | {float(s['J-Mean']):.3f} | {float(s['F-Mean']):.3f} | {0.0 if n == 0 else tune:.1f} | {frame:.3f} |")
(out / "curve.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(steps, jf, marker="o")
ax.set_xlabel("one-shot fine-tuning steps per object")
ax.set_ylabel("J&F (davis2016-dev test split)")
ax.set_title(f"OSVOS from the {os.environ['CURVE_START']} parent")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "osvos_steps_curve.png", dpi=120)
print(out / "osvos_steps_curve.png")
PY
