"""One kind of target is one model and one publisher: registered once, by the same kind, and nothing
outside them branches on the kind."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
from conftest import REPO, make_project

from wheelflow.config.spec import TARGET_MODELS, IndexTarget, StaticTarget, Target, load_spec, parse_target
from wheelflow.core.errors import SpecError
from wheelflow.flows.githubrelease import GitHubReleasePublisher
from wheelflow.flows.stages import Publisher
from wheelflow.flows.targets import PUBLISHERS, IndexPublisher, StaticPublisher, index_key, publisher_for

# Where a kind may be decided: its own model (config/spec.py) and its own publisher (flows/targets.py).
KIND_HOMES = {Path("wheelflow/config/spec.py"), Path("flows/targets.py")}
SOURCES = ("wheelflow", "flows", "tasks", "deployments")
_KINDS = "|".join(map(re.escape, TARGET_MODELS))
# A branch on a target's kind: the old flag, a comparison with a kind's name or with a target's kind,
# and the "whichever of the kinds' keys is set" fallback.
KIND_BRANCHES = re.compile(
    r"\bis_static\b"
    rf"|\bkind\s*[!=]=\s*[\"'](?:{_KINDS})[\"']"
    r"|\btarget\.kind\s*[!=]="
    r"|\bstore_url\s+or\b|\bor\s+\w+(?:\.\w+)*\.store_url\b"
    r"|\bindex\s+or\s+\w+(?:\.\w+)*\.store_url"
)


def kind_branches(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if KIND_BRANCHES.search(line)]


def test_the_grep_finds_the_branches_it_is_for() -> None:
    """The patterns catch each spelling that the kinds' own classes replaced (so an empty result means none)."""
    for line in (
        "if target.is_static:",
        'if self.kind == "static" and self.store_url != LOCAL_STORE:',
        "return target.index or target.store_url or target.name",
        "recorded.get(t.store_url or index_key(t), {})",
        "if target.kind != 'index':",
    ):
        assert kind_branches(line) == [line], line
    assert kind_branches('if dist.kind == "wheel":\nif builder.kind == "docker":') == []


def test_no_code_outside_a_kinds_own_model_and_publisher_branches_on_the_kind() -> None:
    found = []
    for root in SOURCES:
        for path in sorted((REPO / root).rglob("*.py")):
            relative = path.relative_to(REPO)
            if relative in KIND_HOMES:
                continue
            found += [f"{relative}: {line}" for line in kind_branches(path.read_text(encoding="utf-8"))]
    assert found == [], "decide it in the kind's model or publisher:\n" + "\n".join(found)


def test_every_kind_has_one_model_and_one_publisher_under_the_same_name() -> None:
    assert list(PUBLISHERS) == list(TARGET_MODELS)
    for kind, model in TARGET_MODELS.items():
        assert typing.get_args(model.model_fields["kind"].annotation) == (kind,), model
        assert issubclass(model, Target)


def test_every_publisher_implements_the_whole_interface() -> None:
    wanted = {name for name, _ in inspect.getmembers(Publisher, inspect.isfunction) if not name.startswith("_")}
    wanted |= {"install_option"}
    for kind, make in PUBLISHERS.items():
        publisher = make()
        missing = [name for name in sorted(wanted) if not hasattr(publisher, name)]
        assert missing == [], f"{kind}: {missing}"
        assert isinstance(publisher, (IndexPublisher, StaticPublisher, GitHubReleasePublisher))


def test_each_target_is_read_as_its_kinds_model_and_published_by_its_publisher() -> None:
    index = parse_target({"name": "staging", "index": "http://127.0.0.1:1/simple/"})
    static = parse_target({"name": "wheels", "kind": "static", "store-url": "local"})
    assert (type(index), type(static)) == (IndexTarget, StaticTarget)
    assert (type(publisher_for(index)), type(publisher_for(static))) == (IndexPublisher, StaticPublisher)
    assert not hasattr(index, "store_url") and not hasattr(static, "index")  # each kind has its own keys only
    # the record key each publisher owns: the index as configured, the store's one location
    assert index_key(index) == "http://127.0.0.1:1/simple/" and index_key(static) == "local"
    assert publisher_for(static).record_keys(
        parse_target(
            {"name": "w", "kind": "static", "store-url": "file:///tmp/./x//y", "public-url": "http://h.invalid/"}
        )
    ) == ("file:///tmp/./x//y", "/tmp/x/y")


def test_default_limits_are_the_kinds_own() -> None:
    public = parse_target({"name": "prod", "index": "pypi"})
    private = parse_target({"name": "staging", "index": "local"})
    static = parse_target({"name": "wheels", "kind": "static", "store-url": "local"})
    assert publisher_for(public).limits(public).manylinux_only is True
    assert publisher_for(private).limits(private).allow_local_versions is True
    assert publisher_for(static).limits(static).max_file_size is None


@pytest.mark.case(
    "bad input",
    "a target's kind misspelt",
    "one line naming the kind key, the registered kinds and the closest one; exit 2",
)
def test_an_unknown_kind_lists_the_registered_kinds_with_the_closest_one(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", extra='[tool.wheelflow.targets.w]\nkind = "statik"\nstore-url = "local"\n')
    with pytest.raises(SpecError) as info:
        load_spec(project)
    assert str(info.value) == (
        "spec error: tool.wheelflow.targets.w.kind: unknown target kind 'statik'; "
        'fix: did you mean \'static\'? (use "index", "static", "github-release")'
    )
    assert info.value.exit_code == 2
