"""Every relative link and every ``#anchor`` in README.md and docs/*.md resolves: the file (or
folder) exists, and an anchor names a heading of the page it points into, slugged as GitHub does
(lowercase, punctuation dropped, spaces to hyphens; a repeated heading gets -1, -2, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before the duplicate suffix).

    >>> slug("Pretraining on a CPU (held-out)")
    'pretraining-on-a-cpu-held-out'
    """
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())  # punctuation (backticks, colons, brackets, ...)
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence is None:
            out.append((n, line))
    return out


def anchors(text: str) -> set[str]:
    """The anchors a page defines: its headings' slugs, repeated ones suffixed -1, -2, ...; and
    explicit ``<a name=...>`` / ``<a id=...>``."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
        out.update(HTML_ANCHOR.findall(line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code."""
    out = []
    for n, line in prose_lines(text):
        line = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
        out.extend((n, target) for target in LINK.findall(line))
    return out


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """``page:line: target (why)`` (``page`` relative to ``root``) for every relative link or anchor
    of ``page`` that does not resolve."""
    text = page.read_text()
    problems = []
    cache: dict[Path, set[str]] = {}
    for n, target in links(text):
        if not target or EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{n}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file: {dest})")
            continue
        if anchor:
            if dest.suffix.lower() != ".md" or not dest.is_file():
                problems.append(f"{where} (an anchor into a file that is not a markdown page)")
                continue
            if dest not in cache:
                cache[dest] = anchors(dest.read_text())
            if anchor not in cache[dest]:
                near = sorted(a for a in cache[dest] if a.split("-")[0] == anchor.split("-")[0])[:5]
                problems.append(f"{where} (no heading with anchor #{anchor} in {dest.name}; similar: {near})")
    return problems


# -- the check itself --------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_pages_link_each_other() -> None:
    """The README links every docs page, and every docs page is reachable from it."""
    readme_targets = {t.partition("#")[0] for _, t in links((REPO / "README.md").read_text())}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme_targets, f"README.md does not link docs/{page.name}"


# -- the checker, on pages made up here --------------------------------------------------------


def test_github_slugs() -> None:
    assert slug("Motion: the flow an encoder has learned, and MotionSqueeze") == "motion-the-flow-an-encoder-has-learned-and-motionsqueeze"
    assert slug("MotionSqueeze's cost (CPU)") == "motionsqueezes-cost-cpu"
    assert slug("STM memory (`stm`), bounded") == "stm-memory-stm-bounded"
    assert slug("Install and run: the two commands") == "install-and-run-the-two-commands"
    assert slug("What [keyframes](x.md) buy") == "what-keyframes-buy"
    assert slug("data_root and J&F") == "data_root-and-jf"
    text = "# A\n\n## Notes\n\ntext\n\n## Notes\n\n### Notes\n\n```bash\n# Notes\n# not a heading\n```\n"
    assert anchors(text) == {"a", "notes", "notes-1", "notes-2"}  # the fenced "# Notes" is code


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "pic.png").write_bytes(b"")
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Known (section)\n\n## Known (section)\n\n[up](../README.md#readme)\n")
    (tmp_path / "README.md").write_text(
        "# Readme\n\n"
        "[fine](docs/page.md#known-section) [dup](docs/page.md#known-section-1) ![pic](docs/pic.png) [self](#readme)\n"
        "[web](https://example.com/x#y) `[in code](nowhere.md)`\n\n"
        "```\n[in a block](nowhere.md)\n```\n\n"
        "[missing file](docs/gone.md)\n"
        "[missing anchor](docs/page.md#unknown)\n"
        "![missing picture](docs/gone.png)\n"
        "[missing here](#nothing)\n"
        "[third copy](docs/page.md#known-section-2)\n"
    )
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert [p.split(": ")[1].split(" ")[0] for p in problems] == [
        "docs/gone.md", "docs/page.md#unknown", "docs/gone.png", "#nothing", "docs/page.md#known-section-2",
    ], problems  # fmt: skip
    assert all(p.startswith("README.md:") for p in problems), problems
    assert broken_links(tmp_path / "docs" / "page.md", tmp_path) == []
