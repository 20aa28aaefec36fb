"""The documentation holds together: a short README that links every page, links that lead somewhere,
and a spec reference that says what wheelflow.schema.json says.

No servers and no wheelflow import: files are read and the reference is rendered by
tools/spec_reference.py, loaded from the repository by path.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
BENCH_README = REPO / "bench" / "README.md"
MAX_README_LINES = 300


def load_tool(name: str) -> ModuleType:
    path = REPO / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"wheelflow_tools_{name}", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), BENCH_README]


# -- reading Markdown --------------------------------------------------------------------------------

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def links(path: Path) -> list[str]:
    """Every link target of a page, outside code blocks and code spans."""
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found += LINK.findall(CODE_SPAN.sub("code", line))
    return found


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")


# -- the tests ---------------------------------------------------------------------------------------


def test_the_spec_reference_is_what_the_schema_renders() -> None:
    tool = load_tool("spec_reference")
    page = DOCS / "spec-reference.md"
    current = page.read_text(encoding="utf-8") if page.exists() else None
    expected = tool.render_file(current, tool.load_schema())
    assert current == expected, (
        "docs/spec-reference.md is not what wheelflow.schema.json renders: run `python tools/spec_reference.py` "
        "and commit the result"
    )


def test_the_spec_reference_names_every_key_of_every_table() -> None:
    tool = load_tool("spec_reference")
    schema = json.loads((REPO / "wheelflow.schema.json").read_text(encoding="utf-8"))
    rendered = tool.render(schema)
    for table in [schema, *schema.get("$defs", {}).values()]:
        for key in table.get("properties", {}):
            assert f"| `{key}`" in rendered, f"{table.get('title')}.{key} is missing from the spec reference"


def test_the_readme_is_short() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, (
        f"README.md has {count} lines (at most {MAX_README_LINES}): move the detail into a page under docs/"
    )


def test_the_readme_links_every_page() -> None:
    linked = {
        (README.parent / t.split("#", 1)[0]).resolve()
        for t in links(README)
        if is_relative(t) and not t.startswith("#")
    }
    required = [*sorted(DOCS.glob("*.md")), BENCH_README]
    assert len(required) > 1
    unlinked = [p.relative_to(REPO).as_posix() for p in required if p.resolve() not in linked]
    assert unlinked == [], f"README.md does not link {unlinked}: add them to its Documentation list"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in links(page):
        if not is_relative(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            shown = destination.relative_to(REPO) if REPO in destination.parents else destination
            broken.append(f"{target}: no file {shown}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert broken == [], f"{page.relative_to(REPO)}: broken links: {broken}"
