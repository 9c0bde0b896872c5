"""Every relative link and image in README.md and docs/*.md resolves to a file of the repository, and
every in-page anchor to a heading of its page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def _links(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m.group(1) for m in LINK.finditer(text)]


def test_anchor_rule_by_hand():
    assert _anchor("Limits and guarantees") == "limits-and-guarantees"
    assert _anchor("Deployment: ONNX Runtime and TensorRT") == "deployment-onnx-runtime-and-tensorrt"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    bad = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):  # http(s)://, mailto: ... : not checked (no network here)
            continue
        path, _, frag = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            bad.append(f"{link}: no such file")
        elif frag and target.suffix == ".md" and frag not in _anchors(target):
            bad.append(f"{link}: no heading #{frag} in {target.name}")
    assert not bad, bad


def test_no_page_cites_files_outside_the_repository():
    for page in PAGES:
        for link in _links(page):
            if not re.match(r"^[a-z]+:", link) and link.split("#")[0]:
                target = (page.parent / link.split("#")[0]).resolve()
                assert ROOT in target.parents or target == ROOT, (page.name, link)
