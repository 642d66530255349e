"""A held-out part of YouTube-VOS's training split, for local J/F with seen and unseen classes.

YouTube-VOS's validation masks are not public, so local scores need videos of ``train`` held out
(every 5th frame annotated). The official table splits objects into *seen* classes (in the
training videos) and *unseen* ones; a hold-out of random videos has almost no unseen object,
since nearly every class occurs elsewhere. :func:`make_holdout` therefore holds out, as the
benchmark's own validation split was built, every video of a few whole classes (seeded draw: these
become the unseen classes) plus a number of other videos drawn at random (their classes stay in
the rest of train: seen). ``tools/ytvos_holdout.py`` writes the lists; ``task=ytvos
task.dataset.split=train task.dataset.split_file=<the hold-out list>`` scores on them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from corrflow.data.vos.ytvos import YTVOSObject

__all__ = ["Holdout", "make_holdout"]


@dataclass(frozen=True)
class Holdout:
    """The two lists and what they hold.

    ``held_out`` and ``rest`` are sorted video names that partition the meta file's videos;
    ``unseen_classes`` the classes drawn whole into the hold-out; ``objects`` counts the held-out
    objects by ``seen`` / ``unseen`` / ``unlabelled`` (no class), *seen* meaning that the class
    occurs in ``rest`` (what :func:`corrflow.evaluation.ytvos.evaluate_ytvos` scores as seen).
    """

    held_out: list[str]
    rest: list[str]
    unseen_classes: list[str]
    objects: dict[str, int] = field(default_factory=dict)


def make_holdout(
    videos: Mapping[str, Sequence[YTVOSObject]], *, unseen_classes: int = 10, seen_videos: int = 200, seed: int = 0
) -> Holdout:
    """Hold out every video with an object of ``unseen_classes`` classes drawn at random, and
    ``seen_videos`` more drawn from the others.

    Args:
        videos: ``{video: objects}``, :func:`corrflow.data.vos.ytvos.read_meta` of ``train/meta.json``.
        unseen_classes: whole classes held out (0: none; every held-out object is then seen or
            unlabelled).
        seen_videos: further videos held out, drawn among those without an unseen-class object;
            a class they would take wholly out of the rest counts as unseen in ``objects``.
        seed: the draws (the same meta file and arguments give the same lists).

    Raises:
        ValueError: more classes or videos asked than the meta file has, or negative counts.
    """
    if unseen_classes < 0 or seen_videos < 0:
        raise ValueError(f"unseen_classes and seen_videos must be >= 0, got {unseen_classes} and {seen_videos}")
    classes = sorted({o.category for objs in videos.values() for o in objs if o.category})
    if unseen_classes > len(classes):
        raise ValueError(f"asked for {unseen_classes} unseen classes, but the meta file names only {len(classes)}")
    rng = random.Random(seed)
    unseen = sorted(rng.sample(classes, unseen_classes))
    whole = {v for v, objs in videos.items() if any(o.category in unseen for o in objs)}
    others = sorted(set(videos) - whole)
    if seen_videos > len(others):
        raise ValueError(f"asked for {seen_videos} more held-out videos, but only {len(others)} have no object of the unseen classes")
    held = whole | set(rng.sample(others, seen_videos))
    rest = sorted(set(videos) - held)
    in_rest = {o.category for v in rest for o in videos[v] if o.category}
    counts = {"seen": 0, "unseen": 0, "unlabelled": 0}
    for v in held:
        for o in videos[v]:
            counts["unlabelled" if not o.category else "seen" if o.category in in_rest else "unseen"] += 1
    return Holdout(sorted(held), rest, unseen, counts)
