"""Write a held-out part of YouTube-VOS's training split (and the rest) for local seen/unseen J/F.

    python tools/ytvos_holdout.py --root /data/YouTubeVOS [--unseen-classes 10] [--seen-videos 200] [--seed 0] [--out holdout]

writes ``<out>.txt`` (the held-out videos) and ``<out>_rest.txt`` (train without them), one name a
line, and prints what they hold. Then score on the hold-out with
``tools/propagate.py task=ytvos data.root=/data/YouTubeVOS task.dataset.split=train
task.dataset.split_file=<out>.txt``; train on the rest, not the hold-out. See
:mod:`corrflow.data.vos.ytvos_holdout` for how the videos are drawn.
"""

import argparse
from pathlib import Path

from corrflow.data.vos.ytvos import read_meta
from corrflow.data.vos.ytvos_holdout import make_holdout
from corrflow.utils.cli import user_errors
from corrflow.utils.quiet import quiet_third_party


@user_errors
def main(argv: list[str] | None = None) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="the YouTube-VOS root (holds train/meta.json)")
    p.add_argument("--meta", default="train/meta.json", help="the meta file, relative to --root")
    p.add_argument("--unseen-classes", type=int, default=10, help="classes held out whole (unseen)")
    p.add_argument("--seen-videos", type=int, default=200, help="further videos held out (seen classes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="holdout", help="writes <out>.txt and <out>_rest.txt")
    args = p.parse_args(argv)
    h = make_holdout(read_meta(Path(args.root) / args.meta), unseen_classes=args.unseen_classes, seen_videos=args.seen_videos, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    held, rest = out.with_name(out.name + ".txt"), out.with_name(out.name + "_rest.txt")
    held.write_text("".join(f"{v}\n" for v in h.held_out))
    rest.write_text("".join(f"{v}\n" for v in h.rest))
    print(f"{held}: {len(h.held_out)} videos ({h.objects['seen']} seen, {h.objects['unseen']} unseen, {h.objects['unlabelled']} unlabelled objects)")
    print(f"{rest}: {len(h.rest)} videos")
    print("unseen classes: " + (", ".join(h.unseen_classes) or "none"))


if __name__ == "__main__":
    main()
