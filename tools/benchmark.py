"""Benchmarks: ``python tools/benchmark.py {attention,train,propagate,stm,keyframes} [options]``.

Every speed is printed beside the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from corrflow.utils.cli import user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
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
    sub.add_parser("keyframes", help="J&F against the number of keyframes given: a table and a plot", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["propagate"]:  # its own options: see `benchmark.py propagate --help`
        from corrflow.benchmarks.propagate import main as propagate_main

        propagate_main(argv[1:])
        return 0
    if argv[:1] == ["stm"]:  # its own options: see `benchmark.py stm --help`
        from corrflow.benchmarks.stm import main as stm_main

        stm_main(argv[1:])
        return 0
    if argv[:1] == ["keyframes"]:  # its own options: see `benchmark.py keyframes --help`
        from corrflow.benchmarks.keyframes import main as keyframes_main

        keyframes_main(argv[1:])
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
