"""The documentation holds together: a short README that links every page, links that lead somewhere,
and a spec reference that says what wheelflow.schema.json says.

No servers and no wheelflow import: files are read and the reference is rendered by
tools/spec_reference.py, loaded from the repository by path. The TOML blocks are validated by
wheelflow's spec loader in one child interpreter (what ``wheelflow matrix --spec FILE`` loads).

Every ```toml block of every page is parsed. One that holds a ``[tool.wheelflow]`` table, or is a
standalone spec (no ``[tool]`` table), is a spec and must load. A block shown on purpose as what
wheelflow refuses says so on the line right above its fence: ``<!-- not a valid spec: WHY -->``
(it must then fail to load, so that the marker cannot go stale).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
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


# -- TOML blocks ---------------------------------------------------------------------------------------

TOML_FENCE = re.compile(r"^\s{0,3}```toml\s*$")
COUNTER_EXAMPLE = re.compile(r"^\s*<!--\s*not a valid spec:.*-->\s*$")


def toml_blocks() -> list[tuple[str, str, bool]]:
    """(page:line, text, marked as a counter-example) of every ```toml block of every page."""
    blocks = []
    for page in pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if not TOML_FENCE.match(line):
                continue
            end = next(n for n in range(number + 1, len(lines)) if FENCE.match(lines[n]))
            marked = number > 0 and bool(COUNTER_EXAMPLE.match(lines[number - 1]))
            name = f"{page.relative_to(REPO).as_posix()}:{number + 1}"
            blocks.append((name, "\n".join(lines[number + 1 : end]) + "\n", marked))
    return blocks


#: Loads each block as wheelflow loads a spec file; prints {block: error or null}, "not a spec" for
#: TOML that holds no spec (a [tool] table without wheelflow's).
VALIDATE = textwrap.dedent("""
    import json, sys, tempfile
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path
    from wheelflow.config.spec import load_spec
    verdicts = {}
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "pyproject.toml").write_text('[project]\\nname = "docs-example"\\n')
        for name, text in json.load(sys.stdin).items():
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                verdicts[name] = f"invalid TOML: {exc}"
                continue
            if "tool" in data and "wheelflow" not in data["tool"]:
                verdicts[name] = "not a spec"
                continue
            spec_file = project / "spec.toml"
            spec_file.write_text(text)
            try:
                load_spec(project, spec_file, project_files=False)
                verdicts[name] = None
            except Exception as exc:
                verdicts[name] = str(exc)
    print(json.dumps(verdicts))
""")


@functools.cache
def spec_verdicts() -> dict[str, str | None]:
    blocks = {name: text for name, text, _ in toml_blocks()}
    done = subprocess.run(
        [sys.executable, "-c", VALIDATE], input=json.dumps(blocks), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_page_with_toml_is_covered() -> None:
    covered = {name.rsplit(":", 1)[0] for name, _, _ in toml_blocks()}
    with_toml = {p.relative_to(REPO).as_posix() for p in pages() if "```toml" in p.read_text(encoding="utf-8")}
    assert covered == with_toml and "docs/abi-backfill-upstream.md" in covered


@pytest.mark.parametrize(("name", "text", "marked"), toml_blocks(), ids=[b[0] for b in toml_blocks()])
def test_every_toml_block_parses_and_every_spec_in_it_loads(name: str, text: str, marked: bool) -> None:
    verdict = spec_verdicts()[name]
    assert not (verdict or "").startswith("invalid TOML"), f"{name}: {verdict}"
    if marked:
        assert verdict not in (None, "not a spec"), f"{name} is marked as a counter-example but loads"
    else:
        assert verdict in (None, "not a spec"), f"{name}: {verdict}"


# -- shell blocks --------------------------------------------------------------------------------------

ANY_FENCE = re.compile(r"^\s{0,3}(```|~~~)\s*([\w+-]*)")
#: Fences whose text is shell: parsed by ``bash -n``. A ```console block is a transcript: only its
#: ``$ `` lines are commands.
SHELL = {"sh", "bash", "shell", "console"}
#: wheelflow commands that need no server, network, Docker or build: run from the repository root.
RUN_OFFLINE = {"schema", "matrix"}


def fenced_blocks() -> list[tuple[str, str, str]]:
    """(page:line, language, text) of every fenced block of every page."""
    blocks = []
    for page in pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        number = 0
        while number < len(lines):
            opening = ANY_FENCE.match(lines[number])
            if not opening:
                number += 1
                continue
            end = next(n for n in range(number + 1, len(lines)) if FENCE.match(lines[n]))
            name = f"{page.relative_to(REPO).as_posix()}:{number + 1}"
            blocks.append((name, opening.group(2), "\n".join(lines[number + 1 : end]) + "\n"))
            number = end + 1
    return blocks


def shell_blocks() -> list[tuple[str, str]]:
    """(page:line, the commands) of every shell block."""
    found = []
    for name, language, text in fenced_blocks():
        if language not in SHELL:
            continue
        if language == "console":
            text = "".join(line[2:] + "\n" for line in text.splitlines() if line.startswith("$ "))
        found.append((name, text))
    return found


def wheelflow_commands(text: str) -> list[list[str]]:
    """Every ``wheelflow ...`` (or ``.venv/bin/wheelflow ...``) command of a shell block, as argv
    without the program: split at ``&&``, ``||``, ``;``, ``|`` and ``&``, comments dropped."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set("&|;"):
                while command and re.match(r"^\w+=", command[0]):  # VAR=value before the program
                    command.pop(0)
                if command and Path(command[0]).name == "wheelflow":
                    commands.append(command[1:])
                command = []
            else:
                command.append(token)
    return commands


#: Parses each command line with wheelflow's own parser; prints {line: refusal or null}.
PARSE = textwrap.dedent("""
    import contextlib, io, json, sys
    from wheelflow.cli import build_parser
    verdicts = {}
    for argv in json.load(sys.stdin):
        refused = io.StringIO()
        try:
            with contextlib.redirect_stderr(refused), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
            verdicts[" ".join(argv)] = None
        except (Exception, SystemExit) as exc:
            verdicts[" ".join(argv)] = str(exc) or refused.getvalue().strip()
    print(json.dumps(verdicts))
""")


def test_every_fenced_block_names_its_language() -> None:
    """So that no shell block escapes the checks below: a synopsis or a listing says ```text."""
    unnamed = [name for name, language, _ in fenced_blocks() if not language]
    assert unnamed == [], f"fenced blocks without a language (```sh, ```console, ```text, ...): {unnamed}"


def test_every_page_with_shell_is_covered() -> None:
    covered = {name.rsplit(":", 1)[0] for name, _ in shell_blocks()}
    with_shell = {name.rsplit(":", 1)[0] for name, language, _ in fenced_blocks() if language in SHELL}
    assert covered == with_shell and "README.md" in covered


@pytest.mark.parametrize(("name", "text"), shell_blocks(), ids=[b[0] for b in shell_blocks()])
def test_every_shell_block_parses(name: str, text: str) -> None:
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{name}: bash -n: {done.stderr.strip()}"


def test_every_wheelflow_command_in_the_docs_is_one_wheelflow_accepts() -> None:
    commands = [(name, argv) for name, text in shell_blocks() for argv in wheelflow_commands(text)]
    assert len(commands) >= 5
    done = subprocess.run(
        [sys.executable, "-c", PARSE],
        input=json.dumps([argv for _, argv in commands]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdicts = json.loads(done.stdout)
    refused = {name: f"wheelflow {' '.join(argv)}: {verdicts[' '.join(argv)]}" for name, argv in commands}
    assert {name: why for name, why in refused.items() if not why.endswith(": None")} == {}


def test_the_docs_commands_that_run_offline_succeed(tmp_path: Path) -> None:
    """``wheelflow schema``, ``wheelflow matrix ...``: run as written, from the repository root."""
    runnable = [argv for _, text in shell_blocks() for argv in wheelflow_commands(text) if argv[0] in RUN_OFFLINE]
    assert {argv[0] for argv in runnable} == RUN_OFFLINE
    wheelflow = Path(sys.executable).with_name("wheelflow")
    for argv in runnable:
        done = subprocess.run(
            [str(wheelflow), *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "WHEELFLOW_HOME": str(tmp_path / "home")},
            timeout=120,
        )
        assert done.returncode == 0, f"wheelflow {' '.join(argv)}: {done.stderr.strip()[-500:]}"
