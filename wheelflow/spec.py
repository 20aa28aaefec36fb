"""The release spec: ``[tool.wheelflow]`` in the project's pyproject.toml, or a standalone TOML file.

Parsing validates everything up front, so a bad spec stops the release before anything is built.
Each error is a :class:`~wheelflow.errors.SpecError` naming the key, the bad value and the fix.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name

from .audits import parse_size
from .builders.docker import DockerOptions
from .childenv import check_pass_env
from .errors import SpecError
from .matrix import Matrix, parse_matrix

ARTIFACT_KINDS = ("sdist", "wheel")
# What a target receives: plain wheels carry no local version label, variant wheels do (+cu130...).
ROUTABLE_KINDS = ("sdist", "wheel", "plain-wheel", "variant-wheel")
BUILDERS = ("docker", "local")
APPROVAL_POLICIES = ("manual", "auto", "auto-if-staging-verified")
INDEX_ALIASES = ("local", "pypi", "testpypi")
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_TARGET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SECRET_KEYS = {"password", "token", "username", "api-token", "api_token"}


@dataclass(frozen=True)
class VersionSource:
    """Where the release version comes from: a git tag pattern and/or a version file."""

    tag: str | None = "v{version}"
    file: str | None = None


@dataclass(frozen=True)
class Target:
    """An index that receives (some of) the release's files."""

    name: str
    index: str  # an alias (local, pypi, testpypi) or a Simple API URL
    upload_url: str | None = None
    credentials: str = "env"  # "env", "none", or "prefect-secret:BLOCK"
    artifacts: tuple[str, ...] = ARTIFACT_KINDS
    verify_timeout: float | None = None
    # None: the index's default (see wheelflow.indexes.limits_for)
    max_file_size: int | None = None
    project_budget: int | None = None
    allow_local_versions: bool | None = None
    manylinux_only: bool | None = None
    # Variant wheels routed here, by local version label pattern (e.g. "cu130*" for a per-CUDA index).
    local_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseSpec:
    project_dir: Path
    name: str
    version: VersionSource = field(default_factory=VersionSource)
    artifacts: tuple[str, ...] = ARTIFACT_KINDS
    build_env: Mapping[str, str] = field(default_factory=dict)
    smoke: str | None = None
    targets: tuple[Target, ...] = ()
    matrix: Matrix | None = None
    builder: str | None = None  # "docker", "local", or None: docker when a daemon answers
    docker: DockerOptions = field(default_factory=DockerOptions)
    # A person's decision before each target after the first (staging → production).
    approval: str = "auto"  # one of APPROVAL_POLICIES
    approval_timeout: int = 3600  # seconds; no decision by then fails the release
    # build.pass-env: variables of the runner's environment the build may see (never wheelflow's own secrets).
    pass_env: tuple[str, ...] = ()

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        if name in INDEX_ALIASES:
            # An alias used directly: every artifact goes there, credentials from the environment.
            return Target(name=name, index=name, credentials="none" if name == "local" else "env")
        known = ", ".join([t.name for t in self.targets] + list(INDEX_ALIASES))
        raise SpecError("--to", f"unknown target {name!r}", f"use one of: {known}")


def load_spec(project_dir: str | Path, spec_file: str | Path | None = None) -> ReleaseSpec:
    """Read and validate the spec for the project at ``project_dir``."""
    project = Path(project_dir)
    if not project.is_dir():
        raise SpecError("PATH", f"{str(project)!r} is not a directory", "pass the released project's directory")
    pyproject = _read_toml(project / "pyproject.toml") if (project / "pyproject.toml").is_file() else {}
    if spec_file is not None:
        standalone = _read_toml(Path(spec_file))
        table = standalone.get("tool", {}).get("wheelflow", standalone)
        prefix = "tool.wheelflow" if "tool" in standalone else Path(spec_file).name
    else:
        table = pyproject.get("tool", {}).get("wheelflow")
        prefix = "tool.wheelflow"
        if table is None:
            raise SpecError(
                prefix,
                f"no [tool.wheelflow] table in {project / 'pyproject.toml'}",
                "add one, or pass a standalone spec file with --spec",
            )
    return parse_spec(table, project, default_name=pyproject.get("project", {}).get("name"), prefix=prefix)


def parse_spec(
    table: Mapping[str, Any], project_dir: Path, *, default_name: str | None = None, prefix: str = "tool.wheelflow"
) -> ReleaseSpec:
    _reject_unknown(table, {"name", "artifacts", "smoke", "version", "build", "targets", "matrix", "builder", "docker",
                            "approval", "approval-timeout"}, prefix)

    name = table.get("name", default_name)
    if name is None:
        raise SpecError(f"{prefix}.name", "missing", 'set name = "your-distribution" (or [project].name)')
    _require_type(name, str, f"{prefix}.name")
    if not _NAME_RE.match(name):
        raise SpecError(f"{prefix}.name", f"{name!r} is not a valid distribution name", "use letters, digits, '.', '_' and '-'")

    artifacts = _parse_artifacts(table.get("artifacts", list(ARTIFACT_KINDS)), f"{prefix}.artifacts")

    smoke = table.get("smoke")
    if smoke is not None:
        _require_type(smoke, str, f"{prefix}.smoke")

    version_table = table.get("version", {})
    _require_type(version_table, dict, f"{prefix}.version")
    _reject_unknown(version_table, {"tag", "file"}, f"{prefix}.version")
    tag = version_table.get("tag", "v{version}")
    if tag is not None:
        _require_type(tag, str, f"{prefix}.version.tag")
        if tag.count("{version}") != 1:
            raise SpecError(f"{prefix}.version.tag", f"{tag!r} must contain {{version}} exactly once", 'write e.g. "v{version}"')
    version_file = version_table.get("file")
    if version_file is not None:
        _require_type(version_file, str, f"{prefix}.version.file")
        if not (project_dir / version_file).resolve().is_relative_to(project_dir.resolve()):
            raise SpecError(f"{prefix}.version.file", f"{version_file!r} points outside the project",
                            "give a path inside the project, relative to it")
        if not (project_dir / version_file).is_file():
            raise SpecError(f"{prefix}.version.file", f"{version_file!r} does not exist in {project_dir}", "give a path relative to the project")

    build_table = table.get("build", {})
    _require_type(build_table, dict, f"{prefix}.build")
    _reject_unknown(build_table, {"env", "pass-env"}, f"{prefix}.build")
    pass_env = check_pass_env(build_table.get("pass-env", []), f"{prefix}.build.pass-env")
    build_env = build_table.get("env", {})
    _require_type(build_env, dict, f"{prefix}.build.env")
    for key, value in build_env.items():
        if not isinstance(value, str):
            raise SpecError(f"{prefix}.build.env.{key}", f"{value!r} is not a string", f'quote it: {key} = "{value}"')

    targets_table = table.get("targets", {})
    _require_type(targets_table, dict, f"{prefix}.targets")
    targets = tuple(_parse_target(n, t, f"{prefix}.targets.{n}") for n, t in targets_table.items())

    matrix = parse_matrix(table["matrix"], f"{prefix}.matrix") if "matrix" in table else None
    builder = table.get("builder")
    if builder is not None and builder not in BUILDERS:
        raise SpecError(f"{prefix}.builder", f"unknown builder {builder!r}", 'use "docker" or "local"')
    approval = table.get("approval", "auto")
    if approval not in APPROVAL_POLICIES:
        raise SpecError(f"{prefix}.approval", f"unknown policy {approval!r}", f"use one of: {', '.join(APPROVAL_POLICIES)}")
    approval_timeout = table.get("approval-timeout", 3600)
    if not isinstance(approval_timeout, int) or isinstance(approval_timeout, bool) or approval_timeout <= 0:
        raise SpecError(f"{prefix}.approval-timeout", f"{approval_timeout!r} is not a positive number of seconds",
                        "write e.g. approval-timeout = 3600")
    return ReleaseSpec(
        approval=approval,
        approval_timeout=approval_timeout,
        project_dir=project_dir,
        name=name,
        version=VersionSource(tag=tag, file=version_file),
        artifacts=artifacts,
        build_env=dict(build_env),
        smoke=smoke,
        targets=targets,
        matrix=matrix,
        builder=builder,
        docker=_parse_docker(table.get("docker", {}), f"{prefix}.docker"),
        pass_env=pass_env,
    )


def _parse_docker(table: Any, key: str) -> DockerOptions:
    _require_type(table, dict, key)
    _reject_unknown(table, {"cuda-home", "ca-bundle", "pip-cache", "ccache", "mounts", "env"}, key)
    defaults = DockerOptions()
    for name in ("cuda-home", "ca-bundle"):
        if name in table and table[name] is not False:
            _require_type(table[name], str, f"{key}.{name}")
    mounts = table.get("mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, str) and m.count(":") in (1, 2) for m in mounts):
        raise SpecError(f"{key}.mounts", f"{mounts!r} is not a list of HOST:CONTAINER[:ro] strings",
                        'write mounts = ["/data:/data:ro"]')
    env = table.get("env", {})
    _require_type(env, dict, f"{key}.env")

    def volume(name: str, default: str | None) -> str | None:
        value = table.get(name, True)
        if not isinstance(value, bool):
            raise SpecError(f"{key}.{name}", f"{value!r} is not true or false", f"write {name} = true or false")
        return default if value else None

    return DockerOptions(
        cuda_home=table.get("cuda-home", defaults.cuda_home) or None,
        ca_bundle=table.get("ca-bundle", defaults.ca_bundle) or None,
        pip_cache_volume=volume("pip-cache", defaults.pip_cache_volume),
        ccache_volume=volume("ccache", defaults.ccache_volume),
        mounts=tuple(mounts),
        env={str(k): str(v) for k, v in env.items()},
    )


def _parse_target(name: str, table: Any, key: str) -> Target:
    if not _TARGET_NAME_RE.match(name):
        raise SpecError(key, f"target name {name!r} is not usable", "start with a letter; use letters, digits, '-' and '_'")
    _require_type(table, dict, key)
    secret = _SECRET_KEYS.intersection(table)
    if secret:
        env = env_prefix(name)
        raise SpecError(
            f"{key}.{sorted(secret)[0]}",
            "credentials never go in the spec",
            f'remove it and set {env}_USERNAME/{env}_PASSWORD, or credentials = "prefect-secret:BLOCK"',
        )
    _reject_unknown(table, {"index", "upload-url", "credentials", "artifacts", "local-versions", "verify-timeout",
                            "max-file-size", "project-budget", "allow-local-versions", "manylinux-only"}, key)
    index = table.get("index")
    if index is None:
        raise SpecError(f"{key}.index", "missing", f'set index = "local", "pypi", "testpypi" or a Simple API URL')
    _require_type(index, str, f"{key}.index")
    if index not in INDEX_ALIASES:
        _check_url(index, f"{key}.index")
    upload_url = table.get("upload-url")
    if upload_url is not None:
        _require_type(upload_url, str, f"{key}.upload-url")
        _check_url(upload_url, f"{key}.upload-url")
    credentials = table.get("credentials", "none" if index == "local" else "env")
    _require_type(credentials, str, f"{key}.credentials")
    if credentials not in ("env", "none") and not (
        credentials.startswith("prefect-secret:") and len(credentials) > len("prefect-secret:")
    ):
        env = env_prefix(name)
        raise SpecError(
            f"{key}.credentials",
            f"{credentials!r} is not a credentials source",
            f'use "env" ({env}_USERNAME/{env}_PASSWORD), "prefect-secret:BLOCK" or "none"',
        )
    artifacts = _parse_artifacts(table.get("artifacts", list(ARTIFACT_KINDS)), f"{key}.artifacts", ROUTABLE_KINDS)
    local_versions = table.get("local-versions", [])
    if not isinstance(local_versions, list) or not all(isinstance(v, str) and v for v in local_versions):
        raise SpecError(f"{key}.local-versions", f"{local_versions!r} is not a list of label patterns",
                        'write e.g. local-versions = ["cu130*"]')
    timeout = table.get("verify-timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise SpecError(f"{key}.verify-timeout", f"{timeout!r} is not a positive number of seconds", "write e.g. verify-timeout = 120")
    sizes = {}
    for size_key in ("max-file-size", "project-budget"):
        if size_key in table:
            try:
                sizes[size_key] = parse_size(table[size_key])
            except ValueError:
                raise SpecError(f"{key}.{size_key}", f"{table[size_key]!r} is not a size", 'write bytes or e.g. "100MB", "10GiB"') from None
    flags = {}
    for flag in ("allow-local-versions", "manylinux-only"):
        if flag in table:
            if not isinstance(table[flag], bool):
                raise SpecError(f"{key}.{flag}", f"{table[flag]!r} is not true or false", f"write {flag} = true or false")
            flags[flag] = table[flag]
    return Target(name=name, index=index, upload_url=upload_url, credentials=credentials, artifacts=artifacts,
                  verify_timeout=float(timeout) if timeout is not None else None,
                  max_file_size=sizes.get("max-file-size"), project_budget=sizes.get("project-budget"),
                  allow_local_versions=flags.get("allow-local-versions"), manylinux_only=flags.get("manylinux-only"),
                  local_versions=tuple(local_versions))


def env_prefix(target_name: str) -> str:
    """``staging`` -> ``WHEELFLOW_STAGING``: where a target's credentials are read from."""
    return "WHEELFLOW_" + re.sub(r"[^A-Z0-9]", "_", target_name.upper())


def _parse_artifacts(value: Any, key: str, allowed: tuple[str, ...] = ARTIFACT_KINDS) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(key, f"{value!r} is not a list of artifact kinds", 'write e.g. artifacts = ["sdist", "wheel"]')
    for kind in value:
        if kind not in allowed:
            raise SpecError(key, f"unknown artifact kind {kind!r}", "use " + ", ".join(f'"{k}"' for k in allowed))
    return tuple(dict.fromkeys(value))


def _check_url(url: str, key: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        aliases = ", ".join(INDEX_ALIASES)
        raise SpecError(key, f"{redact_url(url)!r} is neither an index alias nor an http(s) URL", f"use one of {aliases} or a Simple API URL")
    if parts.username or parts.password:
        raise SpecError(key, f"{redact_url(url)!r} embeds credentials", "remove them from the URL and use the target's credentials source")


def redact_url(url: str) -> str:
    """Replace any user:password in a URL with ***, so it can be shown."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(allowed))}"
            raise SpecError(f"{prefix}.{key}", "unknown key", fix)


def _require_type(value: Any, kind: type, key: str) -> None:
    if not isinstance(value, kind):
        expected = {str: "a string", dict: "a table", list: "a list"}.get(kind, kind.__name__)
        raise SpecError(key, f"{value!r} is not {expected}", f"write it as {expected}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(str(path), "file not found", "check the path given with --spec") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"invalid TOML ({exc})", "fix the TOML syntax") from None


def normalized(name: str) -> str:
    """PEP 503 normalised project name."""
    return canonicalize_name(name)
