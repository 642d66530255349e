"""Benchmarks: ``python tools/benchmark.py {attention,train,propagate,stm,osvos,flow,keyframes} [options]``.

Every speed is printed beside the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile

from corrflow.utils.cli import user_errors
from corrflow.utils.quiet import quiet_third_party

# Benchmarks that parse their own options: corrflow.benchmarks.<name>.main(argv)
OWN_OPTIONS = ("propagate", "stm", "osvos", "flow", "keyframes")


@user_errors
def main(argv: list[str] | None = None) -> int:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)

    a = sub.add_parser("attention", help="restricted-attention backends: time, bytes/s vs the memory floor, peak memory")
    a.add_argument("--preset", default=None, help="size preset (see corrflow/benchmarks/attention.py); default: gpu on CUDA, cpu otherwise")
    a.add_argument("--backends", nargs="*", default=None)
    a.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    a.add_argument("--repeats", type=int, default=20)
    a.add_argument("--json", default=None, help="also write the rows here")

    t = sub.add_parser("train", help="training clips/s and peak memory, data loading included, per attention backend")
    t.add_argument("--backends", nargs="*", default=["unfold", "auto"])
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--json", default=None)
    t.add_argument("overrides", nargs="*", help="Hydra overrides of the train config, e.g. data.root=... data.num_workers=8")

    sub.add_parser("propagate", help="label propagation frames/s at 480p vs a dense-affinity implementation", add_help=False)
    sub.add_parser("stm", help="STM seconds/frame at 480p, bounded memory vs the paper's unbounded bank", add_help=False)
    sub.add_parser("osvos", help="OSVOS one-shot fine-tuning seconds/video and seconds/frame at 480p", add_help=False)
    sub.add_parser("flow", help="flow end-point error of features on affinely warped real frames; MotionSqueeze's cost", add_help=False)
    sub.add_parser("keyframes", help="J&F against the number of keyframes given: a table and a plot", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in OWN_OPTIONS:  # each has its own options: `benchmark.py <name> --help`
        importlib.import_module(f"corrflow.benchmarks.{argv[0]}").main(argv[1:])
        return 0
    args = p.parse_args(argv)
    if args.what == "attention":
        from corrflow.benchmarks.attention import format_table, main_rows

        rows = main_rows(preset=args.preset, backends=args.backends, dtype=args.dtype, repeats=args.repeats)
        print(format_table(rows))
    elif args.what == "train":
        from corrflow.benchmarks.train import format_train_table, run_train_benchmark

        with tempfile.TemporaryDirectory() as work:
            rows = run_train_benchmark(backends=args.backends, steps=args.steps, warmup=args.warmup, overrides=args.overrides, workdir=work)
        print(format_train_table(rows))
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
