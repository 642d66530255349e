"""Score written results: DAVIS masks (official J&F) or propagated keypoints (PCK).

    python tools/evaluate.py davis --results R --davis-root D [--split val --year 2017]
    python tools/evaluate.py jhmdb --results R --jhmdb-root J --split-file F
    python tools/evaluate.py keypoints --results R --annotations file.json

Works on any method's outputs in the DAVIS layout (``R/<seq>/<frame>.png``) or as keypoint
arrays (``R/<seq>.npz`` with ``keypoints`` (T, K, 2)). The core lives in
:mod:`corrflow.evaluation`; this script only parses arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from corrflow.data.keypoints.annotations import load_jhmdb_split, load_keypoints_json
from corrflow.evaluation import evaluate_davis, evaluate_keypoints
from corrflow.utils.cli import user_errors
from corrflow.utils.quiet import quiet_third_party


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)

    davis = sub.add_parser("davis", help="J&F of palette-PNG masks, official davis2017-evaluation rules")
    davis.add_argument("--results", required=True, help="folder of <seq>/<frame>.png results")
    davis.add_argument("--davis-root", required=True, help="DAVIS folder with Annotations/ and ImageSets/")
    davis.add_argument(
        "--split", default="val",
        help="ImageSets/<year>/<split>.txt, else the DAVIS-2016 release's ImageSets/<resolution>/<split>.txt (default: val)",
    )  # fmt: skip
    davis.add_argument(
        "--year", default="2017", choices=("2016", "2017"),
        help="2017: ids 1..N are objects, 255 void; 2016: one object, any non-zero pixel (the 2016 release's "
        "grayscale 0/255 masks, or the 2016 split of a DAVIS-2017 folder)",
    )  # fmt: skip
    davis.add_argument("--resolution", default="480p", help="480p, 1080p (DAVIS-2016) or Full-Resolution (DAVIS-2017)")
    davis.add_argument("--sequences", nargs="+", default=None, help="score only these sequences")
    davis.add_argument("--output-dir", default=None, help="where the CSVs go (default: --results)")
    davis.add_argument("--no-progress", action="store_true", help="no progress bar and no printed tables")

    thresholds = dict(type=float, nargs="+", default=[0.1, 0.2], help="PCK alphas (default: 0.1 0.2)")
    jhmdb = sub.add_parser("jhmdb", help="PCK of propagated JHMDB joints")
    jhmdb.add_argument("--results", required=True, help="folder of <action>/<video>.npz predictions")
    jhmdb.add_argument("--jhmdb-root", required=True, help="JHMDB folder with joint_positions/ and Rename_Images/")
    jhmdb.add_argument("--split-file", required=True, help="<action>_test_split<k>.txt or lines '<action>/<video>'")
    jhmdb.add_argument("--thresholds", **thresholds)
    jhmdb.add_argument("--output-dir", default=None)

    kp = sub.add_parser("keypoints", help="PCK of propagated keypoints against a JSON annotation file")
    kp.add_argument("--results", required=True, help="folder of <seq>.npz predictions")
    kp.add_argument("--annotations", required=True, help='{"sequences": {seq: {frame: [[x, y, visible], ...]}}}')
    kp.add_argument("--thresholds", **thresholds)
    kp.add_argument("--output-dir", default=None)
    return parser


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    if args.task == "davis":
        evaluate_davis(
            args.results,
            args.davis_root,
            sequences=args.sequences,
            split=args.split,
            year=args.year,
            resolution=args.resolution,
            output_dir=args.output_dir,
            progress=not args.no_progress,
        )
        return 0
    if args.task == "jhmdb":
        annotations = load_jhmdb_split(args.jhmdb_root, args.split_file)
    else:
        annotations = load_keypoints_json(args.annotations)
    scores = evaluate_keypoints(args.results, annotations, thresholds=args.thresholds, output_dir=args.output_dir)
    for name, value in scores.as_dict().items():
        print(f"{name}: {100 * value:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
