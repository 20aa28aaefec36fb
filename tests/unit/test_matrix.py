"""Matrix expansion: deterministic, validated, with clear errors for bad templates and empty matrices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from wheelflow.config.matrix import parse_matrix
from wheelflow.core.errors import SpecError


def test_product_minus_excludes_plus_includes_in_a_stable_order() -> None:
    matrix = parse_matrix(
        {
            "axes": {"python": ["3.11", "3.13"], "cuda": ["12.8", "13.0"]},
            "exclude": [{"python": "3.13", "cuda": "12.8"}],
            "include": [{"python": "3.12", "cuda": "13.0"}],
            "image": "wheelflow/builder:py{python}",
            "env": {"TORCH_CUDA_ARCH_LIST": "9.0", "CUDA_TAG": "cu{cuda_nodot}"},
            "build-requires": ["torch==2.9.1+cu{cuda_nodot}"],
            "local-version": "cu{cuda_nodot}",
        }
    )
    assert [c.name for c in matrix.cells] == ["py3.11-cu12.8", "py3.11-cu13.0", "py3.13-cu13.0", "py3.12-cu13.0"]
    last = matrix.cells[-1]
    assert last.image == "wheelflow/builder:py3.12"
    assert last.env == {"TORCH_CUDA_ARCH_LIST": "9.0", "CUDA_TAG": "cu130"}
    assert last.build_requires == ("torch==2.9.1+cu130",)
    assert last.local_version == "cu130"


def test_expansion_order_is_the_declared_order_whatever_the_hash_seed() -> None:
    # String hashing is randomised per process: an expansion that went through a set or a hash
    # would give the same order twice in one process and another order in the next run.
    table = {
        "axes": {"python": ["3.13", "3.10", "3.12", "3.11"], "cuda": ["13.0", "12.4", "12.8", "11.8", "12.6"]},
        "exclude": [{"cuda": "11.8"}],
        "include": [{"python": "3.9", "cuda": "11.8"}],
    }
    expected = [f"py{p}-cu{c}" for p in table["axes"]["python"] for c in table["axes"]["cuda"] if c != "11.8"]
    expected.append("py3.9-cu11.8")
    script = (
        "import json, sys; from wheelflow.config.matrix import parse_matrix; "
        "print(json.dumps([c.name for c in parse_matrix(json.loads(sys.argv[1])).cells]))"
    )
    for seed in ("0", "1", "2", "3"):
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(table)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=REPO,
            check=True,
        )
        assert json.loads(result.stdout) == expected, f"PYTHONHASHSEED={seed}"


def test_a_template_naming_an_unknown_axis_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_matrix({"axes": {"python": ["3.11"], "cuda": ["13.0"]}, "image": "builder:cu{cudaa}"})
    assert str(err.value) == (
        "spec error: tool.wheelflow.matrix.image: template 'builder:cu{cudaa}' names unknown axis "
        "'cudaa'; fix: use one of python, cuda (or AXIS_nodot)"
    )


def test_an_empty_matrix_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        parse_matrix({"axes": {"python": ["3.11"]}, "exclude": [{"python": "3.11"}]})
    assert str(err.value) == (
        "spec error: tool.wheelflow.matrix: the matrix is empty (every cell is excluded); "
        "fix: remove an exclude row or add an include row"
    )
    with pytest.raises(SpecError, match=r"^spec error: tool\.wheelflow\.matrix\.axes: the matrix has no axes"):
        parse_matrix({"axes": {}})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"axes": {"python": ["3.11"]}, "exclude": [{"pyhton": "3.11"}]},
            "spec error: tool.wheelflow.matrix.exclude: row {'pyhton': '3.11'} names unknown axis 'pyhton'; fix: use one of python",
        ),
        (
            {"axes": {"python": ["3.11"], "cuda": ["13.0"]}, "include": [{"python": "3.12"}]},
            "spec error: tool.wheelflow.matrix.include: row {'python': '3.12'} lacks cuda; fix: give every axis a value in an included row",
        ),
        (
            {"axes": {"python": ["3.11"]}, "local-version": "py+{python}"},
            "spec error: tool.wheelflow.matrix.local-version: renders to 'py+3.11' for py3.11, not a PEP 440 local label; "
            "fix: use letters, digits and dots, e.g. cu{cuda_nodot}",
        ),
        (
            {"axes": {"python": ["3.11"]}, "concurency": 2},
            "spec error: tool.wheelflow.matrix.concurency: unknown key; fix: did you mean 'concurrency'?",
        ),
    ],
)
def test_bad_rows_and_keys_are_one_line_errors(table, message) -> None:
    with pytest.raises(SpecError) as err:
        parse_matrix(table)
    assert str(err.value) == message


def test_hello_cuda_matrix_has_a_variant_wheel_per_architecture() -> None:
    from conftest import REPO

    from wheelflow.config.spec import load_spec

    matrix = load_spec(REPO / "examples" / "hello-cuda").matrix
    assert [(c.name, c.local_version, c.env["HELLO_CUDA_ARCHS"]) for c in matrix.cells] == [
        ("py3.11-arch80", "sm80", "80"),
        ("py3.11-arch90", "sm90", "90"),
    ]


TORCH_RULES = [
    {"when": {"torch": ">=2.6"}, "require": {"cuda": ">=12.6"}, "reason": "torch 2.6 ships CUDA 12.6+ builds only"},
    {"when": {"python": ">=3.13"}, "require": {"torch": ">=2.5"}},
]


def test_rules_drop_the_combinations_they_forbid_and_nothing_else() -> None:
    matrix = parse_matrix(
        {"axes": {"python": ["3.11", "3.13"], "torch": ["2.4", "2.6"], "cuda": ["12.4", "12.8"]}, "rules": TORCH_RULES}
    )
    assert [c.name for c in matrix.cells] == [
        "py3.11-torch2.4-cu12.4",
        "py3.11-torch2.4-cu12.8",
        "py3.11-torch2.6-cu12.8",
        "py3.13-torch2.6-cu12.8",
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {
                "axes": {"python": ["3.13"], "torch": ["2.6"], "cuda": ["12.8"]},
                "rules": TORCH_RULES,
                "include": [{"python": "3.13", "torch": "2.4", "cuda": "12.8"}],
            },
            "spec error: tool.wheelflow.matrix.include: row {'python': '3.13', 'torch': '2.4', 'cuda': '12.8'} breaks the "
            "rule python>=3.13 requires torch>=2.5; fix: remove the row or change the rule",
        ),
        (
            {"axes": {"torch": ["2.6"], "cuda": ["12.4"]}, "rules": TORCH_RULES[:1]},
            "spec error: tool.wheelflow.matrix: the matrix is empty (every cell is excluded or ruled out by rules); "
            "fix: remove an exclude row or a rule, or add an include row",
        ),
        (
            {"axes": {"torch": ["2.6"]}, "rules": [{"when": {"torch": "=>2.6"}, "require": {"torch": "<3"}}]},
            "spec error: tool.wheelflow.matrix.rules.when.torch: '=>2.6' is not a PEP 440 version specifier; "
            'fix: write e.g. ">=2.6" or ">=12.6,<13"',
        ),
        (
            {"axes": {"arch": ["sm80"]}, "rules": [{"when": {"arch": ">=80"}, "require": {"arch": "<100"}}]},
            "spec error: tool.wheelflow.matrix.rules.when: compares axis 'arch', whose value 'sm80' is not a version; "
            "fix: compare only axes with PEP 440 versions (python, cuda, torch)",
        ),
        (
            {"axes": {"torch": ["2.6"]}, "rules": [{"when": {"torch": ">=2.6"}, "require": {"cuda": ">=12.6"}}]},
            "spec error: tool.wheelflow.matrix.rules.require: names unknown axis 'cuda'; fix: use one of torch",
        ),
        (
            {"axes": {"torch": ["2.6"]}, "rules": [{"when": {"torch": ">=2.6"}, "requires": {"torch": "<3"}}]},
            "spec error: tool.wheelflow.matrix.rules.requires: unknown key; fix: did you mean 'require'?",
        ),
    ],
)
def test_bad_rules_are_one_line_errors(table, message) -> None:
    with pytest.raises(SpecError) as err:
        parse_matrix(table)
    assert str(err.value) == message


def test_expanded_table_lists_each_cell_as_built(tmp_path) -> None:
    from wheelflow.config.spec import expanded_table, load_spec, parse_spec

    assert expanded_table(load_spec(REPO / "examples" / "hello-cuda"))[1] == {
        "cell": "py3.11-arch90",
        "values": {"python": "3.11", "arch": "90"},
        "image": "wheelflow/builder:py3.11",
        "runtime-image": "wheelflow/runtime:py3.11",
        "local-version": "sm90",
        "env": {"HELLO_CUDA_ARCHS": "90"},
        "build-requires": [],
        "gpu": False,
        "gpu-archs": ["sm_90"],
        "gpu-archs-policy": "at-least",
        "timeout": 900.0,
    }
    ruled = parse_spec(
        {"name": "x", "matrix": {"axes": {"torch": ["2.4", "2.6"], "cuda": ["12.4"]}, "rules": TORCH_RULES[:1]}},
        tmp_path,
    )
    assert [row["cell"] for row in expanded_table(ruled)] == ["torch2.4-cu12.4"]
    assert expanded_table(parse_spec({"name": "x"}, tmp_path)) == []


def test_a_failed_build_is_named_by_its_cause_not_the_frontends_summary() -> None:
    from wheelflow.builds.building import first_error_line

    traceback = [
        "Traceback (most recent call last):",
        '  File "setup.py", line 3, in <module>',
        '    raise InvalidVersion(f"Invalid version: {version!r}")',
        "packaging.version.InvalidVersion: Invalid version: '1.0.x'",
        "",
        "ERROR Backend subprocess exited when trying to invoke get_requires_for_build_wheel",
    ]
    assert first_error_line(traceback) == "packaging.version.InvalidVersion: Invalid version: '1.0.x'"
    compiler = [
        "nvcc -c kernel.cu",
        'kernel.cu(3): error: identifier "x" is undefined',
        "1 error detected",
        "ERROR Backend subprocess exited when trying to invoke build_wheel",
    ]
    assert first_error_line(compiler) == 'kernel.cu(3): error: identifier "x" is undefined'


def test_many_failed_cells_are_one_short_line_grouped_by_error() -> None:
    from wheelflow.builds.cells import SUMMARY_LIMIT, summarize_failures

    same = "build failed (exit 1): packaging.version.InvalidVersion: Invalid version: '1.0.x'"
    failures = [(f"py3.{i}-cu{j}", f"cell py3.{i}-cu{j}: {same}") for i in range(12) for j in range(8)]
    assert summarize_failures(failures, 96) == f"96 of 96 cells failed: py3.0-cu0 and 95 more: {same}"
    mixed = failures[:2] + [("py3.13-cu0", "cell py3.13-cu0: smoke failed: " + "x" * 600)]
    line = summarize_failures(mixed, 97)
    assert line.startswith(f"3 of 97 cells failed: py3.0-cu0 and 1 more: {same}; py3.13-cu0: smoke failed: xxx")
    assert len(line) <= SUMMARY_LIMIT and line.endswith("…")


def test_a_shortened_summary_cuts_the_detail_and_keeps_every_fix_whole() -> None:
    from wheelflow.builds.cells import SUMMARY_LIMIT, summarize_failures

    fix = 'fix: include them in the sdist (MANIFEST.in, e.g. "include csrc/*.h"), or drop "sdist" from artifacts'
    sdist = f"cell c1: pkg-1.0.tar.gz does not build: the sdist lacks {'csrc/kernel.cuh, ' * 30}csrc/a.h ({'y' * 200}); {fix}"
    other = "cell c2: build failed (exit 1): " + "z" * 300 + "; fix: see the build log above"
    line = summarize_failures([("c1", sdist), ("c2", other)], 2)
    assert len(line) <= SUMMARY_LIMIT
    assert line.startswith("2 of 2 cells failed: c1: pkg-1.0.tar.gz does not build: the sdist lacks csrc/kernel.cuh")
    assert f"…; {fix}" in line
    assert line.endswith("; fix: see the build log above") or line.endswith("1 more error(s) in the report")
    assert "…" not in line.split("; fix: ")[-1]


def _huge_matrix_project(root) -> None:
    """A project whose matrix has four axes of 100 values: 100⁴ = 10⁸ combinations."""
    root.mkdir(parents=True, exist_ok=True)
    axis = lambda p: "[" + ", ".join(f'"{p}{i}"' for i in range(100)) + "]"  # noqa: E731
    (root / "pyproject.toml").write_text(
        '[project]\nname = "huge"\nversion = "1.0.0"\n[tool.wheelflow]\n[tool.wheelflow.matrix]\n'
        f"axes = {{ a = {axis('a')}, b = {axis('b')}, c = {axis('c')}, d = {axis('d')} }}\n"
        'exclude = [{ a = "a1" }]\ninclude = [{ a = "a1", b = "b1", c = "c1", d = "d1" }]\n'
    )


def test_expansion_is_lazy_and_stops_at_max_cells_plus_one() -> None:
    import tracemalloc

    from pydantic_core import PydanticCustomError

    from wheelflow.config.matrix import expand

    axes = {name: tuple(f"{name}{i}" for i in range(100)) for name in "abcd"}
    produced = []
    tracemalloc.start()
    try:
        with pytest.raises(PydanticCustomError, match=r"more than max-cells \(256\).*100,000,000"):
            for values in expand(axes, ({"a": "a1"},), (), (), 256):
                produced.append(values)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(produced) == 256  # the 257th cell raised: nothing past it was made
    assert peak < 2_000_000  # bytes: a few hundred cells, not the product


@pytest.mark.case(
    "bad input",
    "a 100⁴ matrix (10⁸ cells): check, matrix and release, with and without --json",
    "refused at once in constant memory: one line naming max-cells, exit 2, no traceback",
)
@pytest.mark.parametrize("command", ["matrix", "matrix --json", "check", "release --json"])
def test_a_huge_matrix_is_refused_in_constant_memory(command: str, tmp_path) -> None:
    """Run as a user runs it, with the address space capped at 1 GiB: a matrix built as a list
    first (10⁸ dicts) dies of MemoryError with a traceback instead."""
    import resource

    project = tmp_path / "huge"
    _huge_matrix_project(project)
    words = command.split()
    argv = {
        "matrix": ["matrix", str(project)],
        "check": ["check", str(tmp_path / "x.whl"), "--spec", str(project / "pyproject.toml")],
        "release": ["release", str(project)],
    }[words[0]] + words[1:]
    (tmp_path / "x.whl").write_bytes(b"")
    cap = 1 << 30

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    result = subprocess.run(
        [sys.executable, "-c", "import sys; from wheelflow.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "WHEELFLOW_HOME": str(tmp_path / "home")},
        preexec_fn=limit,
        timeout=300,  # a guard against a hang, not a measurement
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "more than max-cells (256)" in lines[0], result.stderr
    if "--json" in words:
        assert json.loads(result.stdout)["error"] in lines[0]


def test_the_cli_cell_table_has_the_columns_the_docs_describe() -> None:
    from wheelflow.cli.release import CELL_COLUMNS, cell_columns
    from wheelflow.core.report import CellReport

    docs = (REPO / "docs" / "matrix-and-builders.md").read_text()
    for column in ("torch", "built from", "compiler cache"):
        assert f"cell table's `{column}` column" in docs
        assert column in CELL_COLUMNS
    row = CellReport("c1", state="built", wheel="p-1.0-cp311-cp311-linux_x86_64.whl", duration=42.04)
    row.torch, row.from_sdist, row.compiler_cache, row.smoke = "2.14.1+cu130", True, "1 of 2 compiles hit", "passed"
    assert dict(zip(CELL_COLUMNS, cell_columns(row.json()))) == {
        "cell": "c1",
        "wheel": "p-1.0-cp311-cp311-linux_x86_64.whl",
        "state": "built",
        "duration": "42.0 s",
        "smoke": "passed",
        "torch": "2.14.1+cu130",
        "built from": "sdist",
        "compiler cache": "1 of 2 compiles hit",
    }


def test_a_failed_cell_reports_how_long_its_build_ran() -> None:
    from wheelflow.config.matrix import Cell
    from wheelflow.flows.matrix import built_outcome

    class FailedState:
        message = "failed"

        def result(self, raise_on_failure: bool = True):
            return RuntimeError("cell c1: the sdist lacks csrc/a.h")

        def is_completed(self) -> bool:
            return False

    class FailedFuture:  # a Prefect future whose task raised (no task runs here)
        state = FailedState()

        def wait(self) -> None:
            pass

    outcome = built_outcome(Cell("c1", {}), FailedFuture(), None, 61.5)
    assert outcome.wheel is None and outcome.duration == 61.5
