"""The documentation holds together: the README stays a short landing page, every relative link in
it and in docs/*.md reaches a file (and, for a `#anchor` into Markdown, a heading), and every page
in docs/ is linked from the README. A page renamed or a heading reworded breaks a test, not a reader."""
from __future__ import annotations

import pathlib
import re
from urllib.parse import unquote

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at white space (a title may follow) or `)`.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `[x](y)` in a code sample is not a link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation out, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeats numbered as GitHub numbers them (-1, -2, …)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: pathlib.Path) -> list[str]:
    targets = []
    for line in _prose(path.read_text()):
        targets.extend(LINK.findall(CODE_SPAN.sub("", line)))
    return targets


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto: … are not checked


def broken(page: pathlib.Path) -> list[str]:
    """The relative links of one page that lead nowhere, as `target (why)`."""
    problems = []
    for target in filter(_relative, links(page)):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            problems.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{target} (no heading #{anchor} in {dest.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_stays_a_landing_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move reference text into docs/"


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if _relative(t)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_the_checker_sees_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Edge: many replicas on `Redis`\n\n## Edge: many replicas on `Redis`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#edge-many-replicas-on-redis) [repeat](other.md#edge-many-replicas-on-redis-1) "
                    "[gone](missing.md) [bad](other.md#no-such-heading) [web](https://example.com/x)\n"
                    "```\n[in code](nowhere.md)\n```\n[self](#nothing)\n")
    assert [problem.split(" ")[0] for problem in broken(page)] == ["missing.md", "other.md#no-such-heading", "#nothing"]
