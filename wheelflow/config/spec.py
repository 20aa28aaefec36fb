"""The release spec: ``[tool.wheelflow]`` in the project's pyproject.toml, or a standalone TOML file.

The spec's tables are typed pydantic models (``SpecTable`` and the models it holds); parsing
validates everything up front, so a bad spec stops the release before anything is built. Each
error is one :class:`~wheelflow.core.errors.SpecError` line naming the key, the bad value and the fix.
``spec_json_schema()`` publishes the same models as a JSON Schema (``wheelflow.schema.json``;
regenerate it with ``python -m wheelflow.config.spec``).
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from annotated_types import Gt, Le, MinLen
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from wheelflow.config import assetnames
from wheelflow.config.bounds import (
    MAX_COMMAND,
    MAX_NESTING,
    TemplateRefused,
    check_path,
    nesting_problem,
    path_problem,
    quoted,
    template_fields,
    too_long,
    url_problem,
)
from wheelflow.config.matrix import Matrix, MatrixTable, render_template
from wheelflow.config.repairoptions import RepairOptions, check_command
from wheelflow.config.spectypes import (
    SPEC_ERROR,
    ByteSize,
    EnvTable,
    Expect,
    OneOf,
    SpecModel,
    Text,
    generic_wording,
    problem,
    spec_error,
)
from wheelflow.core.childenv import pass_env_problem
from wheelflow.core.deadline import MAX_SECONDS
from wheelflow.core.errors import SpecError, WheelflowError
from wheelflow.core.redaction import redact_url, url_credentials

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ArtifactKind = Literal["sdist", "wheel"]
# What a target receives: plain wheels carry no local version label, variant wheels do (+cu130...).
RoutableKind = Literal["sdist", "wheel", "plain-wheel", "variant-wheel"]
Builder = Literal["docker", "local"]
ApprovalPolicy = Literal["manual", "auto", "auto-if-staging-verified"]
IndexAlias = Literal["local", "pypi", "testpypi"]
SharedFiles = Literal["every-subindex", "root"]
ARTIFACT_KINDS: tuple[str, ...] = get_args(ArtifactKind)
ROUTABLE_KINDS: tuple[str, ...] = get_args(RoutableKind)
BUILDERS: tuple[str, ...] = get_args(Builder)
APPROVAL_POLICIES: tuple[str, ...] = get_args(ApprovalPolicy)
INDEX_ALIASES: tuple[str, ...] = get_args(IndexAlias)
SHARED_FILES: tuple[str, ...] = get_args(SharedFiles)
#: A built-in target: a static index under $WHEELFLOW_HOME served on loopback while the release runs.
STATIC_DEMO = "static-demo"
#: store-url = "local": the embedded static index (under $WHEELFLOW_HOME, served by wheelflow on loopback).
LOCAL_STORE = "local"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_TARGET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SECRET_KEYS = {"password", "token", "username", "api-token", "api_token"}
# Storage options are written in the spec, so they never hold a secret: fsspec reads keys itself
# (s3fs: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or they come from credentials = "prefect-secret:BLOCK".
_SECRET_OPTION_WORDS = ("key", "secret", "token", "password", "credential", "passwd")


def _artifact_kinds(choices: tuple[str, ...], example: str) -> Any:
    """A list of artifact kinds (one kind alone is a list of one), each named once."""
    artifact_kind = Annotated[Literal[choices], OneOf("artifact kind", choices)]  # type: ignore[valid-type]
    return Annotated[
        tuple[artifact_kind, ...],
        MinLen(1),
        AfterValidator(lambda kinds: tuple(dict.fromkeys(kinds))),
        BeforeValidator(lambda value: [value] if isinstance(value, str) else value),
        Expect("a list of artifact kinds", f"write e.g. artifacts = {example}"),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "array", "items": {"enum": list(choices), "type": "string"}, "minItems": 1},
                    {"enum": list(choices), "type": "string"},
                ]
            }
        ),
    ]


ArtifactKinds = _artifact_kinds(ARTIFACT_KINDS, '["sdist", "wheel"]')
RoutableKinds = _artifact_kinds(ROUTABLE_KINDS, '["sdist", "plain-wheel"]')
VerifyTimeout = Annotated[
    StrictFloat,
    Gt(0),
    Le(MAX_SECONDS),
    AllowInfNan(False),
    Expect("a finite positive number of seconds, at most a year", "write e.g. verify-timeout = 120"),
]
UploadConcurrency = Annotated[StrictInt, Gt(0), Expect("a positive integer", "write e.g. upload-concurrency = 4")]
UploadTimeout = Annotated[
    StrictFloat,
    Gt(0),
    Le(MAX_SECONDS),
    AllowInfNan(False),
    Expect("a finite positive number of seconds, at most a year", "write e.g. upload-timeout = 600"),
]
DEFAULT_UPLOAD_TIMEOUT = 600.0  # one attempt of a 100 MB wheel at 2 Mbit/s: about 400 s
DEFAULT_UPLOAD_CONCURRENCY = 4  # the public index's users are asked not to flood it: 4 at once is polite
ApprovalTimeout = Annotated[
    StrictInt,
    Gt(0),
    Le(MAX_SECONDS),
    Expect("a positive number of seconds, at most a year", "write e.g. approval-timeout = 3600"),
]


def _check_url(url: str) -> str:
    if reason := url_problem(url):
        raise problem(reason, "give the index's URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem(
            f"{redact_url(url)!r} is neither an index alias nor an http(s) URL",
            f"use one of {', '.join(INDEX_ALIASES)} or a Simple API URL",
        )
    if parts.username or parts.password:
        raise problem(
            f"{redact_url(url)!r} embeds credentials",
            "remove them from the URL and use the target's credentials source",
        )
    in_query = [kind for kind in url_credentials(url) if "query" in kind or "fragment" in kind]
    if in_query:  # a token there would be printed wherever the URL is
        raise problem(
            f"{redact_url(url)!r} carries {in_query[0]}",
            "remove it from the URL and use the target's credentials source",
        )
    return url


def _install_command(command: str) -> str:
    """An install command as users type it: `pip install` and a requirement; {name}, {version}, {index}."""
    if reason := too_long(command, MAX_COMMAND):
        raise problem(reason, "shorten the command")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise problem(f"{quoted(command)} is not a command line ({exc})", "quote it as a shell would") from None
    if words[:2] != ["pip", "install"] or len(words) < 3:
        raise problem(
            f"{quoted(command)} does not start with `pip install` and a requirement",
            'write e.g. "pip install {name}=={version} --index-url {index}" (uv runs it as `uv pip install`)',
        )
    try:
        fields = set(template_fields(command))
    except TemplateRefused as exc:
        raise problem(str(exc), "use only plain {name}, {version} and {index}") from None
    unknown = fields - {"name", "version", "index"}
    if unknown:
        raise problem(f"{quoted(command)} uses {{{sorted(unknown)[0]}}}", "use only {name}, {version} and {index}")
    if any(urlsplit(w).username or urlsplit(w).password for w in words if "://" in w):
        raise problem("credentials never go in the spec", "give the index URL without user:password")
    return command


def _bounded_command(command: str) -> str:
    """A command the spec gives to a shell: bounded, so it is refused here, not by the kernel after an upload."""
    if reason := too_long(command, MAX_COMMAND):
        raise problem(reason, "put a long smoke test in a script in the project (or the package) and run that")
    return command


def _false_is_none(value: Any) -> Any:
    return None if value is False else value


# A host path in [docker]; false turns it off (TOML has no null).
HostPathOrFalse = Annotated[
    Text | None,
    BeforeValidator(_false_is_none),
    Expect("a host path or false", "write a path, or false to turn it off"),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"const": False}]}),
]


def _mount(mount: str) -> str:
    if mount.count(":") not in (1, 2):
        raise ValueError("not HOST:CONTAINER[:ro]")
    return mount


class VersionSource(SpecModel):
    """``[tool.wheelflow.version]``: where the release version comes from."""

    tag: Text | None = Field(
        "v{version}",
        description="Git tag pattern; {version} appears once, e.g. v{version}. A tag that says the version "
        "file's version plus .postN (v1.2.0.post1 over 1.2.0: an upstream re-tag) releases that post-release.",
    )
    file: Text | None = Field(None, description="File inside the project holding __version__, relative to it.")
    require_tag: bool = Field(
        True,
        description="A final release of a committed project is built only from a commit carrying its tag "
        "(version.tag); an untagged HEAD is refused. false: untagged commits release too (e.g. an example kept "
        "inside another project's repository, whose commits are not its releases). --dev never needs a tag.",
    )

    @field_validator("tag")
    @classmethod
    def _tag_holds_the_version(cls, tag: str | None) -> str | None:
        if tag is None:
            return tag
        try:
            fields = template_fields(tag)
        except TemplateRefused as exc:
            raise problem(str(exc), 'write e.g. "v{version}"') from None
        if fields != ["version"]:
            raise problem(f"{quoted(tag)} must contain {{version}} exactly once", 'write e.g. "v{version}"')
        return tag

    @field_validator("file")
    @classmethod
    def _file_inside_the_project(cls, file: str | None, info: ValidationInfo) -> str | None:
        project = (info.context or {}).get("project_dir")
        if file is None or project is None:
            return file
        if reason := path_problem(project / file):
            raise problem(reason, "give a path relative to the project")
        if not (project / file).resolve().is_relative_to(project.resolve()):
            raise problem(f"{file!r} points outside the project", "give a path inside the project, relative to it")
        if not (project / file).is_file():
            raise problem(f"{file!r} does not exist in {project}", "give a path relative to the project")
        return file


class Target(SpecModel):
    """``[tool.wheelflow.targets.NAME]``: what every kind of target shares. Each kind is one model below
    (its own keys and rules), registered in :data:`TARGET_MODELS`; the spec reads a target as the model its
    ``kind`` names (:data:`TargetTable`)."""

    name: SkipJsonSchema[str]  # the table's key in the spec
    kind: str
    credentials: Annotated[
        Text,
        WithJsonSchema({"anyOf": [{"enum": ["env", "none"]}, {"type": "string", "pattern": "^prefect-secret:.+$"}]}),
    ] = Field(
        "env",
        description='"env" (WHEELFLOW_<TARGET>_USERNAME/_PASSWORD), "prefect-secret:BLOCK" or "none"; '
        'default "none" for the local index, "env" otherwise.',
    )
    artifacts: RoutableKinds = Field(ARTIFACT_KINDS, description="Kinds of files this target receives.")
    verify_timeout: VerifyTimeout | None = Field(
        None, description="Seconds to wait for the index to list the files; default: the index's."
    )
    install_commands: Annotated[
        tuple[Annotated[str, AfterValidator(_install_command)], ...],
        Expect(
            "a list of install commands",
            'write e.g. install-commands = ["pip install {name}=={version} --index-url {index}"]',
        ),
    ] = Field(
        (),
        description="The commands users install the release with, each run with pip and with uv per Python of the "
        "matrix, asserting a wheel (never the sdist) is installed; {name}, {version} and {index} (the "
        "target's Simple API URL) are filled in. Default: pip install NAME==VERSION --index-url INDEX, "
        "and the same with each variant sub-index of a static target.",
    )
    max_file_size: ByteSize | None = Field(None, description='Largest file accepted, bytes or e.g. "100MB".')
    project_budget: ByteSize | None = Field(None, description='Bytes this release may add to the project, e.g. "10GB".')
    allow_local_versions: StrictBool | None = Field(
        None, description="Whether the index accepts +local versions; default: the index's rule."
    )
    manylinux_only: StrictBool | None = Field(
        None, description="Refuse plain linux_* wheels; default: the index's rule."
    )
    local_versions: Annotated[
        tuple[Annotated[str, MinLen(1)], ...],
        Expect("a list of label patterns", 'write e.g. local-versions = ["cu130*"]'),
    ] = Field((), description='Variant wheels routed here, by local label pattern, e.g. ["cu130*"].')

    @classmethod
    def check_keys(cls, table: dict[str, Any]) -> None:
        secret = _SECRET_KEYS.intersection(table)
        if secret:
            env = env_prefix(str(table.get("name", "")))
            raise problem(
                "credentials never go in the spec",
                f'remove it and set {cls.credentials_env(env)}, or credentials = "prefect-secret:BLOCK"',
                key=sorted(secret)[0],
            )
        # A key of another kind's model, named as such (before the unknown-key check's did-you-mean).
        own = {f.alias or n for n, f in cls.model_fields.items()}
        for key in table:
            if key in own:
                continue
            owner = next((k for k, model in TARGET_MODELS.items() if key in _keys_of(model)), None)
            if owner is not None:
                raise problem(f"is for kind = {owner!r}".replace("'", '"'), cls.wrong_key_fix(owner), key=key)
        cls.check_required(table)

    @classmethod
    def credentials_env(cls, prefix: str) -> str:
        """The environment variables ``credentials = "env"`` reads for this kind (``prefix``: WHEELFLOW_<TARGET>)."""
        return f"{prefix}_USERNAME/{prefix}_PASSWORD"

    @classmethod
    def wrong_key_fix(cls, owner: str) -> str:
        """The fix for a key of kind ``owner`` in a target of this kind."""
        return f'add kind = "{owner}", or remove it'

    @classmethod
    def check_required(cls, table: dict[str, Any]) -> None:
        """This kind's keys that must be given, refused with the fix (before the generic "missing")."""

    @model_validator(mode="before")
    @classmethod
    def _local_needs_no_credentials(cls, table: Any) -> Any:
        if not isinstance(table, dict) or "credentials" in table or not cls.local(table):
            return table
        return {**table, "credentials": "none"}

    @classmethod
    def local(cls, table: dict[str, Any]) -> bool:
        """Whether the table names this machine's own embedded index or store (then no credentials)."""
        return False

    @model_validator(mode="after")
    def _credentials_source(self) -> Target:
        source = self.credentials
        if source not in ("env", "none") and not (source.startswith("prefect-secret:") and source != "prefect-secret:"):
            env = env_prefix(self.name)
            raise problem(
                f"{source!r} is not a credentials source",
                f'use "env" ({env}_USERNAME/{env}_PASSWORD), "prefect-secret:BLOCK" or "none"',
                key="credentials",
            )
        return self

    @property
    def public_index(self) -> bool:
        """Whether the target is the public index (or its test instance), whose rules are the defaults."""
        return False

    def check_against_matrix(self, axes: tuple[str, ...]) -> None:
        """The kind's templates over the matrix's ``axes``, checked when the spec is read: a SpecError naming
        the key (nothing to check by default)."""


def _keys_of(model: type[SpecModel]) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


class IndexTarget(Target):
    """``kind = "index"`` (the default): a PyPI-protocol index wheelflow uploads to."""

    kind: Literal["index"] = Field(  # an unknown kind is refused before (_known_kind), listing every kind
        "index",
        description='"index" (the default kind): a PyPI-protocol index wheelflow uploads to.',
    )
    index: Text = Field(description='An alias ("local", "pypi", "testpypi") or a Simple API URL (kind = "index").')
    upload_url: Text | None = Field(None, description="Upload (legacy API) URL; default: the index's own.")
    upload_concurrency: UploadConcurrency = Field(
        DEFAULT_UPLOAD_CONCURRENCY, description="Files uploaded to this target at once (the first file goes alone)."
    )
    upload_timeout: UploadTimeout = Field(
        DEFAULT_UPLOAD_TIMEOUT,
        description="Seconds one upload attempt may take in all, whatever the index does (one that never "
        "answers, or answers a byte at a time); then the index is read back and the upload retried.",
    )

    @classmethod
    def check_required(cls, table: dict[str, Any]) -> None:
        if "index" not in table:
            raise problem("missing", 'set index = "local", "pypi", "testpypi" or a Simple API URL', key="index")

    @classmethod
    def local(cls, table: dict[str, Any]) -> bool:
        return table.get("index") == "local"

    @field_validator("index")
    @classmethod
    def _alias_or_url(cls, index: str) -> str:
        return index if index in INDEX_ALIASES else _check_url(index)

    @field_validator("upload_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return url if url is None else _check_url(url)

    @property
    def public_index(self) -> bool:
        return self.index in ("pypi", "testpypi")


class StaticTarget(Target):
    """``kind = "static"``: a PEP 503 index wheelflow writes itself (store-url) and installers read (public-url)."""

    kind: Literal["static"] = Field(
        description='"static": a PEP 503 index wheelflow writes itself (store-url) and installers read (public-url).'
    )
    store_url: Text = Field(
        description='kind = "static": fsspec URL the index is written to (file:///srv/whl, s3://bucket/whl), '
        'or "local" for the embedded one under $WHEELFLOW_HOME.',
    )
    public_url: Text | None = Field(
        None, description='kind = "static": the http(s) URL installers read store-url at (its root index).'
    )
    layout: Text = Field(
        "{local_version}",
        description='kind = "static": sub-index of a variant wheel, from its '
        'local version label, e.g. "whl/{local_version}".',
    )
    shared_files: Annotated[SharedFiles, OneOf("shared-files", SHARED_FILES)] = Field(
        "every-subindex",
        description='kind = "static": the sdist and plain wheels listed in every sub-index '
        '("every-subindex") or in the root index only ("root").',
    )
    storage_options: Annotated[dict[str, Any], Expect("a table", "write e.g. storage-options = { anon = false }")] = (
        Field(
            default_factory=dict,
            description='kind = "static": fsspec options of the store, never a secret '
            "(keys come from the environment or a Prefect Secret block).",
        )
    )

    @classmethod
    def wrong_key_fix(cls, owner: str) -> str:
        return "a static target is written at store-url and read at public-url"

    @classmethod
    def check_required(cls, table: dict[str, Any]) -> None:
        if "store-url" not in table:
            raise problem(
                "missing", 'set store-url = "s3://bucket/whl" (or "file:///srv/whl", or "local")', key="store-url"
            )

    @classmethod
    def local(cls, table: dict[str, Any]) -> bool:
        return table.get("store-url") == LOCAL_STORE

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, url: str) -> str:
        if url == LOCAL_STORE:
            return url
        from wheelflow.config.staticlayout import check_store_url  # staticindex reads this module's helpers

        _reworded(check_store_url, url)
        return url

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise problem(f"{redact_url(url)!r} is not an http(s) URL", "give the URL installers read the index at")
        if url is not None:
            _check_url(url)
        return url

    @field_validator("layout")
    @classmethod
    def _layout(cls, layout: str) -> str:
        from wheelflow.config.staticlayout import check_layout

        _reworded(check_layout, layout)
        return layout

    @field_validator("storage_options")
    @classmethod
    def _no_secret_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        for path in _option_keys(options):
            words = path[-1].lower().replace("-", "_").split("_")
            if any(word in _SECRET_OPTION_WORDS for word in words):
                raise problem(
                    "a secret never goes in the spec",
                    "remove it: s3fs reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment; "
                    'or set credentials = "prefect-secret:BLOCK" holding the secret options',
                    key=path,
                )
        return options

    @model_validator(mode="after")
    def _public_url_as_the_store_needs(self) -> StaticTarget:
        if self.store_url != LOCAL_STORE and self.public_url is None:
            raise problem("missing", "set public-url to the http(s) URL installers read store-url at", key="public-url")
        if self.store_url == LOCAL_STORE and self.public_url is not None:
            raise problem(
                'is set by wheelflow for store-url = "local"',
                "remove it (the embedded index is served on loopback while the release runs)",
                key="public-url",
            )
        return self


class GitHubReleaseTarget(Target):
    """``kind = "github-release"``: wheels as assets of the GitHub release of the version's tag, published
    from a draft once every asset is proven (the flash-attention family's shape; docs/github-releases.md)."""

    kind: Literal["github-release"] = Field(
        description='"github-release": assets of the GitHub release of the version\'s tag (a draft, published '
        "once every asset is proven)."
    )
    credentials: Annotated[
        Text,
        WithJsonSchema({"anyOf": [{"enum": ["env"]}, {"type": "string", "pattern": "^prefect-secret:.+$"}]}),
    ] = Field(
        "env",
        description='kind = "github-release": "env" (the token in WHEELFLOW_<TARGET>_TOKEN) or '
        '"prefect-secret:BLOCK" (a Secret block holding the token).',
    )
    repository: Text = Field(description='kind = "github-release": the GitHub repository, "OWNER/REPO".')
    api_url: Text = Field(
        assetnames.DEFAULT_API_URL,
        description='kind = "github-release": GitHub\'s REST API; GitHub Enterprise: "https://HOST/api/v3".',
    )
    uploads_url: Text | None = Field(
        None,
        description='kind = "github-release": where assets are uploaded; default: the one of api-url '
        "(GitHub's uploads host, or https://HOST/api/uploads for GitHub Enterprise).",
    )
    tag: Text = Field(
        "v{version}", description='kind = "github-release": the release\'s tag, a template over {version}.'
    )
    asset_url: Text = Field(
        assetnames.DEFAULT_ASSET_URL,
        description='kind = "github-release": where users download an asset, a template over {repository}, '
        "{version}, {name}, {wheel} and the matrix axes (GitHub Enterprise: https://HOST/{repository}/...).",
    )
    guessed_name: Text | None = Field(
        None,
        description='kind = "github-release": the asset name a project\'s setup.py guesses for a cell (e.g. '
        "flash-attention's \"" + assetnames.FLASH_ATTENTION_GUESSED_NAME + "\"); after publishing, each cell's "
        "guessed URL (asset-url with {wheel} this name) must serve that cell's wheel. Unset: not checked.",
    )
    find_links_page: StrictBool | Annotated[str, MinLen(1)] = Field(
        True,
        description='kind = "github-release": publish a --find-links page listing every asset with its sha256 '
        '(true: as asset "index.html"; a name: as that asset; false: none). The install checks use it.',
    )
    add_to_published: StrictBool = Field(
        False,
        description='kind = "github-release": an already published release of the tag gets new assets (its '
        "users see them appear one by one); default: refused, release a new version.",
    )

    @classmethod
    def credentials_env(cls, prefix: str) -> str:
        return f"{prefix}_TOKEN"

    @classmethod
    def wrong_key_fix(cls, owner: str) -> str:
        return "a github-release target publishes to repository, as release assets"

    @classmethod
    def check_required(cls, table: dict[str, Any]) -> None:
        if "repository" not in table:
            raise problem(
                "missing", 'set repository = "OWNER/REPO", e.g. "Dao-AILab/flash-attention"', key="repository"
            )

    @field_validator("repository")
    @classmethod
    def _owner_repo(cls, repository: str) -> str:
        try:
            return assetnames.check_repository(repository, "repository")
        except SpecError as exc:
            raise problem(exc.problem, exc.fix) from None

    @field_validator("api_url", "uploads_url")
    @classmethod
    def _api_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        if reason := url_problem(url):
            raise problem(reason, "give GitHub's API URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise problem(
                f"{redact_url(url)!r} is not a plain http(s) URL",
                'give e.g. api-url = "https://github.example.com/api/v3" (the token comes from the credentials source)',
            )
        if parts.query or parts.fragment:
            raise problem(f"{redact_url(url)!r} carries a query or fragment", "give the API's base URL only")
        return url

    @field_validator("tag")
    @classmethod
    def _tag(cls, tag: str) -> str:
        try:
            names = template_fields(tag)
        except TemplateRefused as exc:
            raise problem(str(exc), 'write e.g. tag = "v{version}"') from None
        if names != ["version"] or any(c.isspace() for c in tag):
            raise problem(
                f"template {quoted(tag)} must name {{version}} once and nothing else", 'write e.g. tag = "v{version}"'
            )
        return tag

    @field_validator("asset_url")
    @classmethod
    def _asset_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("http", "https") or "{wheel}" not in url:
            raise problem(
                f"{quoted(url)} is not an http(s) URL template naming {{wheel}}",
                f'write e.g. asset-url = "{assetnames.DEFAULT_ASSET_URL}"',
            )
        return url

    @field_validator("find_links_page")
    @classmethod
    def _page_name(cls, page: bool | str) -> bool | str:
        if isinstance(page, str) and (page in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+\.html?", page)):
            raise problem(f"{quoted(page)} is not a page's file name", 'write e.g. find-links-page = "index.html"')
        return page

    @model_validator(mode="after")
    def _a_token_is_needed(self) -> GitHubReleaseTarget:
        if self.credentials == "none":
            env = env_prefix(self.name)
            raise problem(
                "GitHub needs a token to create a draft and upload assets",
                f'remove it and export {env}_TOKEN, or set credentials = "prefect-secret:BLOCK"',
                key="credentials",
            )
        return self

    def check_against_matrix(self, axes: tuple[str, ...]) -> None:
        templates = {assetnames.ASSET_URL_KEY: self.asset_url, assetnames.GUESSED_NAME_KEY: self.guessed_name}
        for key, template in templates.items():
            if template is not None:
                assetnames.check_template(template, key, axes)

    @property
    def page_name(self) -> str | None:
        """The find-links page's asset name, or None when none is published."""
        if self.find_links_page is False:
            return None
        return assetnames.FIND_LINKS_PAGE if self.find_links_page is True else self.find_links_page


#: target ``kind`` → its model: a new kind of target is one model here (and its publisher in flows/targets.py).
TARGET_MODELS: dict[str, type[Target]] = {
    "index": IndexTarget,
    "static": StaticTarget,
    "github-release": GitHubReleaseTarget,
}
TARGET_KINDS: tuple[str, ...] = tuple(TARGET_MODELS)
DEFAULT_TARGET_KIND = "index"


def _known_kind(table: Any) -> Any:
    """The table with its kind (default "index"), refused in one line when no model is registered for it."""
    if not isinstance(table, dict):
        return table
    kind = table.get("kind", DEFAULT_TARGET_KIND)
    if kind not in TARGET_MODELS:
        close = difflib.get_close_matches(str(kind), TARGET_KINDS, n=1)
        choices = "use " + ", ".join(f'"{k}"' for k in TARGET_KINDS)
        raise problem(
            f"unknown target kind {kind!r}", f"did you mean {close[0]!r}? ({choices})" if close else choices, key="kind"
        )
    return {**table, "kind": kind}


@dataclass(frozen=True)
class _KindTagHidden:
    """The union's errors as if the kind's model stood alone: pydantic puts the kind's tag in each error's
    location (targets.w.static.store-url), which is no key of the spec."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))

    def _validate(self, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = tuple(str(p) for p in first["loc"] if not isinstance(p, int))
            if loc and loc[0] in TARGET_MODELS:
                loc = loc[1:]
            if first["type"] == SPEC_ERROR:
                raise problem(first["ctx"]["problem"], first["ctx"]["fix"], key=loc + first["ctx"]["key"]) from None
            text, fix = generic_wording(first["type"], first.get("input"), loc[-1] if loc else "the target")
            raise problem(text, fix, key=loc) from None


#: A target as the spec reads it: the model its ``kind`` names.
TargetTable = Annotated[
    IndexTarget | StaticTarget | GitHubReleaseTarget,
    Field(discriminator="kind"),
    _KindTagHidden(),
    BeforeValidator(_known_kind),
]


_TARGET_ADAPTER: TypeAdapter[Target] = TypeAdapter(TargetTable)


def parse_target(table: Mapping[str, Any]) -> Target:
    """One target table (with its ``name``) read as its kind's model."""
    return _TARGET_ADAPTER.validate_python(dict(table))


def _reworded(check: Any, value: str) -> None:
    """A domain check's one-line error ("...; fix: ...") as the spec's own problem."""
    try:
        check(value)
    except WheelflowError as exc:
        text, _, fix = str(exc).partition("; fix: ")
        raise problem(text, fix or None) from None


def _option_keys(options: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key of a nested table, as its path (client_kwargs.aws_secret_access_key)."""
    for key, value in options.items():
        yield (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _option_keys(value, (*prefix, str(key)))


class DockerOptions(SpecModel):
    """``[tool.wheelflow.docker]``: mounts and caches for build containers."""

    cuda_home: HostPathOrFalse = Field(
        "/usr/local/cuda", description="Host toolkit, mounted read-only at /usr/local/cuda (false: none)."
    )
    ca_bundle: HostPathOrFalse = Field(
        HOST_CA_BUNDLE, description="Host CA bundle mounted in, so pip in the container trusts what the host trusts."
    )
    pip_cache: StrictBool = Field(True, description="Share pip's cache across builds (a named volume).")
    ccache: StrictBool = Field(True, description="Share a compiler cache across builds (a named volume).")
    mounts: Annotated[
        tuple[Annotated[Text, AfterValidator(_mount)], ...],
        Expect("a list of HOST:CONTAINER[:ro] strings", 'write mounts = ["/data:/data:ro"]'),
    ] = Field((), description='Extra bind mounts, "HOST:CONTAINER[:ro]".')
    env: EnvTable = Field(default_factory=dict, description="Extra environment of every build container.")

    @property
    def pip_cache_volume(self) -> str | None:
        return "wheelflow-pip-cache" if self.pip_cache else None

    @property
    def ccache_volume(self) -> str | None:
        return "wheelflow-ccache" if self.ccache else None


class RepairTable(SpecModel):
    """``[tool.wheelflow.repair]``: what turns each cell's ``linux_*`` wheel into one installers accept."""

    enabled: StrictBool | None = Field(
        None, description="Repair every built wheel; default: true on Linux (auditwheel), false elsewhere."
    )
    command: Text | None = Field(
        None,
        description="Replaces auditwheel: a command with {wheel} and {dest_dir}, like cibuildwheel's "
        "repair-wheel-command.",
    )
    exclude: Annotated[
        tuple[Annotated[str, MinLen(1)], ...],
        Expect("a list of library patterns", 'write e.g. exclude = ["libfoo.so.*"]'),
    ] = Field((), description="Libraries never vendored, added to the default list (CUDA driver/runtime, torch).")
    plat: Text | None = Field(
        None,
        description='auditwheel --plat, e.g. "manylinux_2_28_x86_64"; default: the '
        "best policy the wheel qualifies for.",
    )

    @field_validator("command")
    @classmethod
    def _command_fields(cls, command: str | None) -> str | None:
        if command is not None:
            _reworded(check_command, command)
        return command

    def options(self) -> RepairOptions | None:
        """The build's repair options, or None when the repair step is off."""
        enabled = self.enabled if self.enabled is not None else sys.platform.startswith("linux")
        return RepairOptions(command=self.command, exclude=self.exclude, plat=self.plat) if enabled else None


class BuildTable(SpecModel):
    """``[tool.wheelflow.build]``."""

    env: EnvTable = Field(default_factory=dict, description="Environment of the build (sdist and wheels).")
    pass_env: tuple[str, ...] = Field(
        default=(),
        description="Names of variables of the runner's environment that the "
        "build may see (e.g. HF_TOKEN); wheelflow's own credentials are refused.",
    )

    requires: Annotated[tuple[Text, ...], Expect("a list of strings", 'write e.g. requires = ["torch=={torch}"]')] = (
        Field(
            (),
            description="Packages added to the build environment besides the project's own build requirements; "
            "templates over the matrix axes (torch=={torch}). For a setup.py that imports torch at the top.",
        )
    )
    isolation: StrictBool = Field(
        True,
        description="true: each build gets a fresh environment; false: a prepared environment per cell "
        "(its requirements and pins), made once with uv and reused by later builds and runs, as "
        "`pip install --no-build-isolation` users build.",
    )
    network: StrictBool = Field(
        False,
        description="false: the build backend (the compile) runs without network, in its own network namespace "
        "where bubblewrap is available; its requirements are installed before, with network. true: a build that "
        "must download while it compiles may.",
    )
    sdist_cell: Annotated[Text, Expect("a cell name", 'write e.g. sdist-cell = "py3.11-torch2.14"')] | None = Field(
        None,
        description="The matrix cell that builds its wheel from the released sdist (proving the sdist "
        "builds); default: the first cell. Only when the sdist is among the artifacts.",
    )
    compiler_cache: Literal["auto", "off"] = Field(
        "auto",
        description="auto: C, C++ and nvcc compile through ccache when it is installed (the local builder), "
        "so a rebuild with one changed kernel file recompiles that file only; off: never.",
    )

    @field_validator("pass_env", mode="before")
    @classmethod
    def _passable(cls, names: Any) -> Any:
        refused = pass_env_problem(names)
        if refused:
            raise problem(*refused)
        return tuple(dict.fromkeys(names))


#: ``abi.users-torch``: what a users' torch other than the build's does (wheelflow.checks.userstorch)
UsersTorchPolicy = Annotated[
    Literal["flag", "same"],
    OneOf("users-torch policy", ("flag", "same"), 'use "flag" (the default: a warning) or "same" (a failure)'),
]


class AbiTable(SpecModel):
    """``[tool.wheelflow.abi]``: the runtimes the ABI gate resolves each wheel's symbols against.

    Every wheel is checked against every runtime for the compatibility grid (a table artifact);
    only the cell's own runtime (``cell-runtime``) refuses a wheel.
    """

    runtimes: Annotated[
        dict[str, tuple[Text, ...]],
        Expect("a table of label = list of pip requirements", 'write e.g. runtimes = { torch-2-9 = ["torch==2.9.1"] }'),
    ] = Field(
        default_factory=dict,
        description="Label -> pip requirements installed with their dependencies as one runtime "
        '(e.g. { torch-2-9 = ["torch==2.9.1"] }), so that a CUDA torch brings the CUDA library wheels '
        "(nvidia-*) it loads: the compatibility grid's columns.",
    )
    cell_runtime: Annotated[Text, Expect("a string", 'write e.g. cell-runtime = "torch-{torch}"')] | None = Field(
        None,
        description="The label of the runtime a cell's wheels must load against, a template over the matrix "
        "axes (e.g. torch-{torch}); unset: symbols refuse nothing, the grid only reports.",
    )
    pip_args: Annotated[
        tuple[Text, ...], Expect("a list of strings", 'write e.g. pip-args = ["--only-binary", ":all:"]')
    ] = Field(
        (),
        description="Extra arguments for the pip that installs the runtimes (an index URL, for instance; "
        "--no-deps installs the requirements alone, without the libraries they load).",
    )
    users_torch: UsersTorchPolicy = Field(
        "flag",
        description="What the install check after upload does when the torch its install resolved (the one "
        'users get with `pip install NAME`) is another release than the cell\'s build torch: "flag" (the '
        'default) says so in the report, the checklist and the run page; "same" fails the release. Either '
        "way the wheel is also checked against that torch's libraries (a symbol it lacks fails).",
    )


class ChecksTable(SpecModel):
    """``[tool.wheelflow.checks]``: how strict the metadata checks before any upload are."""

    strict: StrictBool = Field(
        False,
        description="twine check warnings (e.g. no long description, which the public "
        "index accepts) fail the release; default: reported as 'passed with warnings'.",
    )


DEPENDENCY_SOURCES = ("pypi", "none")


class InstallTable(SpecModel):
    """``[tool.wheelflow.install]``: where the install check after each upload resolves dependencies."""

    dependencies: Text = Field(
        "pypi",
        description='Where dependencies resolve: "pypi" (the public index, as pip '
        'knows it), a Simple API URL, or "none" (--no-deps). The released files always come '
        "from the target, pinned by filename and sha256.",
    )

    @field_validator("dependencies")
    @classmethod
    def _source(cls, value: str) -> str:
        if value in DEPENDENCY_SOURCES:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise problem(
                f'{redact_url(value)!r} is neither "pypi", "none" nor an http(s) URL',
                'use "pypi", "none" or the Simple API URL of the index serving the dependencies',
            )
        if parts.username or parts.password:
            raise problem(f"{redact_url(value)!r} embeds credentials", "give a URL without credentials")
        return value


def _usable_target_names(targets: Any) -> Any:
    """Each target learns its name from its key; a key no environment variable can carry is refused."""
    if not isinstance(targets, dict):
        return targets
    named = {}
    for name, table in targets.items():
        if not _TARGET_NAME_RE.match(name):
            raise problem(
                f"target name {name!r} is not usable", "start with a letter; use letters, digits, '-' and '_'", key=name
            )
        if isinstance(table, dict) and "name" in table:
            raise problem("unknown key", "the target's name is its table's key", key=(name, "name"))
        named[name] = {**table, "name": name} if isinstance(table, dict) else table
    return named


class SpecTable(SpecModel):
    """``[tool.wheelflow]``: how a project is released (in pyproject.toml, or a standalone TOML file)."""

    name: Text | None = Field(None, description="Distribution name; default: [project].name.")
    artifacts: ArtifactKinds = Field(ARTIFACT_KINDS, description="What is built.")
    smoke: Annotated[Text, AfterValidator(_bounded_command)] | None = Field(
        None,
        description="Command run after `pip install` of the release, in a fresh venv (at most 32 KiB).",
    )
    version: VersionSource = Field(default_factory=VersionSource, description="Where the version comes from.")
    build: BuildTable = Field(default_factory=BuildTable, description="The build's environment.")
    repair: RepairTable = Field(default_factory=RepairTable, description="The repair step after each cell's build.")
    targets: Annotated[dict[str, TargetTable], BeforeValidator(_usable_target_names)] = Field(
        default_factory=dict,
        description="Indexes published to, in order; an approval gate before each after the first.",
    )
    matrix: MatrixTable | None = Field(None, description="The wheel matrix: one wheel per cell.")
    builder: Annotated[Builder, OneOf("builder", BUILDERS, 'use "docker" or "local"')] | None = Field(
        None, description="Where cells build; default: docker when a daemon answers, else local."
    )
    docker: DockerOptions = Field(default_factory=DockerOptions, description="Options of the docker builder.")
    approval: Annotated[
        ApprovalPolicy, OneOf("policy", APPROVAL_POLICIES, f"use one of: {', '.join(APPROVAL_POLICIES)}")
    ] = Field("auto", description="A person's decision before each target after the first (staging -> production).")
    approval_timeout: ApprovalTimeout = Field(
        3600, description="Seconds to wait for the approval; no decision by then fails the release."
    )
    abi: AbiTable = Field(default_factory=AbiTable, description="The ABI gate's runtimes (symbols and the grid).")
    checks: ChecksTable = Field(default_factory=ChecksTable, description="The metadata checks before any upload.")
    install: InstallTable = Field(default_factory=InstallTable, description="The install check after each upload.")

    @field_validator("name")
    @classmethod
    def _distribution_name(cls, name: str | None) -> str | None:
        if name is None:
            raise problem("missing", 'set name = "your-distribution" (or [project].name)')
        if not _NAME_RE.match(name):
            raise problem(f"{name!r} is not a valid distribution name", "use letters, digits, '.', '_' and '-'")
        return name

    @model_validator(mode="after")
    def _build_keys_fit_the_matrix(self) -> SpecTable:
        """build.requires templates name only matrix axes; build.sdist-cell names a cell."""
        cells = self.matrix.matrix.cells if self.matrix is not None else ()
        for cell in cells or ():
            for requirement in self.build.requires:
                render_template(requirement, cell.values, ("build", "requires"))
        if not cells:
            for requirement in self.build.requires:
                render_template(requirement, {}, ("build", "requires"))
        if self.build.sdist_cell is not None and self.build.sdist_cell not in {c.name for c in cells}:
            raise problem(
                f"{self.build.sdist_cell!r} is not a cell of the matrix",
                f"use one of: {', '.join(c.name for c in cells) or 'no cells (there is no matrix)'}",
                key=("build", "sdist-cell"),
            )
        return self

    @model_validator(mode="after")
    def _target_templates_fit_the_matrix(self) -> SpecTable:
        """A target's templates over the matrix (a github-release target's asset-url, guessed-name) name
        only placeholders the matrix gives, checked before anything is built."""
        axes = tuple(self.matrix.matrix.axes) if self.matrix is not None else ()
        for name, target in self.targets.items():
            try:
                target.check_against_matrix(axes)
            except SpecError as exc:
                raise problem(exc.problem, exc.fix, key=("targets", name, exc.key)) from None
        return self

    @model_validator(mode="after")
    def _cell_runtimes_exist(self) -> SpecTable:
        """Each cell's runtime label renders to a configured runtime, so the gate never meets an unknown one."""
        template = self.abi.cell_runtime
        if template is None:
            return self
        cells = self.matrix.matrix.cells if self.matrix is not None else ()
        rendered = {cell.name: render_template(template, cell.values, ("abi", "cell-runtime")) for cell in cells} or {
            "the wheel": render_template(template, {}, ("abi", "cell-runtime"))
        }
        for where, label in rendered.items():
            if label not in self.abi.runtimes:
                raise problem(
                    f"renders to {label!r} for {where}, which abi.runtimes does not define",
                    f"add {label} to abi.runtimes, or change the template (runtimes: "
                    f"{', '.join(self.abi.runtimes) or 'none'})",
                    key=("abi", "cell-runtime"),
                )
        return self


@dataclass(frozen=True)
class ReleaseSpec:
    """A validated spec, as the release uses it (every default comes from ``SpecTable``)."""

    project_dir: Path
    name: str
    version: VersionSource
    artifacts: tuple[str, ...]
    build_env: Mapping[str, str]
    smoke: str | None
    targets: tuple[Target, ...]
    matrix: Matrix | None
    builder: str | None  # "docker", "local", or None: docker when a daemon answers
    docker: DockerOptions
    approval: str  # one of APPROVAL_POLICIES
    approval_timeout: int  # seconds; no decision by then fails the release
    pass_env: tuple[str, ...] = ()  # build.pass-env: runner variables the build may see (never wheelflow's secrets)
    repair: RepairOptions | None = None  # None: wheels are published as built
    build_requires: tuple[str, ...] = ()  # build.requires: templates over the matrix axes
    build_isolation: bool = True  # build.isolation
    build_network: bool = False  # build.network: the compile may reach the network
    sdist_cell: str | None = None  # build.sdist-cell: None = the first cell
    compiler_cache: str = "auto"  # build.compiler-cache
    abi: AbiTable = AbiTable()

    def cell_runtime(self, values: Mapping[str, str]) -> str | None:
        """The runtime label a cell's wheels must load against (validated to exist), or None."""
        template = self.abi.cell_runtime
        return None if template is None else render_template(template, values, ("abi", "cell-runtime"))

    strict_checks: bool = False  # checks.strict: twine check warnings fail
    dependencies: str = "pypi"  # install.dependencies: "pypi", "none" or a Simple API URL

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        if name in INDEX_ALIASES:
            # An alias used directly: every artifact goes there, credentials from the environment.
            return IndexTarget(name=name, index=name)
        if name == STATIC_DEMO:
            # The documented demo: a static index under $WHEELFLOW_HOME, served on loopback during the release.
            return parse_target({"name": name, "kind": "static", "store-url": LOCAL_STORE})
        known = ", ".join([t.name for t in self.targets] + list(INDEX_ALIASES) + [STATIC_DEMO])
        raise SpecError("--to", f"unknown target {name!r}", f"use one of: {known}")


def load_spec(
    project_dir: str | Path, spec_file: str | Path | None = None, *, project_files: bool = True
) -> ReleaseSpec:
    """Read and validate the spec for the project at ``project_dir``. ``project_files=False``: the
    project's files are not here and not needed (the monitor reads only the name, artifacts, matrix
    and tag pattern), so paths in the spec (``version.file``) are not looked up."""
    project = Path(project_dir)
    check_path(project, "PATH")
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
    return parse_spec(
        table,
        project,
        default_name=pyproject.get("project", {}).get("name"),
        prefix=prefix,
        project_files=project_files,
    )


def load_spec_file(spec_file: str | Path, project_dir: str | Path, *, project_files: bool = True) -> ReleaseSpec:
    """The spec in ``spec_file``: a project's pyproject.toml (its folder is the project), or a
    standalone spec for the project at ``project_dir``."""
    path = Path(spec_file)
    if path.name == "pyproject.toml":
        return load_spec(path.absolute().parent, project_files=project_files)
    return load_spec(project_dir, path, project_files=project_files)


def parse_spec(
    table: Mapping[str, Any],
    project_dir: Path,
    *,
    default_name: str | None = None,
    prefix: str = "tool.wheelflow",
    project_files: bool = True,
) -> ReleaseSpec:
    if not isinstance(table, Mapping):
        raise SpecError(prefix, f"{table!r} is not a table", "write it as a table")
    data = {"name": default_name, **table}
    try:
        spec = SpecTable.model_validate(data, context={"project_dir": project_dir if project_files else None})
    except ValidationError as exc:
        raise spec_error(exc, prefix) from None
    assert spec.name is not None  # refused by its validator otherwise
    return ReleaseSpec(
        project_dir=project_dir,
        name=spec.name,
        version=spec.version,
        artifacts=spec.artifacts,
        build_env=dict(spec.build.env),
        smoke=spec.smoke,
        targets=tuple(spec.targets.values()),
        matrix=spec.matrix.matrix if spec.matrix is not None else None,
        builder=spec.builder,
        docker=spec.docker,
        approval=spec.approval,
        approval_timeout=spec.approval_timeout,
        pass_env=spec.build.pass_env,
        repair=spec.repair.options(),
        build_requires=spec.build.requires,
        build_isolation=spec.build.isolation,
        build_network=spec.build.network,
        sdist_cell=spec.build.sdist_cell,
        compiler_cache=spec.build.compiler_cache,
        abi=spec.abi,
        strict_checks=spec.checks.strict,
        dependencies=spec.install.dependencies,
    )


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of the ``[tool.wheelflow]`` table, keys as they are written (kebab-case)."""
    schema = SpecTable.model_json_schema(by_alias=True, mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_without_null(schema)}
    return schema | {"title": "[tool.wheelflow]"}


def _without_null(node: Any) -> Any:
    """TOML has no null: an optional key is one left out, so the schema offers no null and no null default."""
    if isinstance(node, list):
        return [_without_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _without_null(value) for key, value in node.items() if not (key == "default" and value is None)}
    if "anyOf" in node:
        choices = [choice for choice in node["anyOf"] if choice != {"type": "null"}]
        node.pop("anyOf")
        node = {**choices[0], **node} if len(choices) == 1 else {"anyOf": choices, **node}
    return node


def env_prefix(target_name: str) -> str:
    """``staging`` -> ``WHEELFLOW_STAGING``: where a target's credentials are read from."""
    return "WHEELFLOW_" + re.sub(r"[^A-Z0-9]", "_", target_name.upper())


NESTING_FIX = "write the spec's tables as docs/spec-reference.md shows them"


def _read_toml(path: Path) -> dict[str, Any]:
    check_path(path, "--spec")
    if path.exists() and not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise SpecError(
            "--spec", f"{str(path)!r} is {what}", "name the spec file itself, e.g. --spec DIR/pyproject.toml"
        )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # the TOML reader recurses once per level: 50,000 levels exhaust the stack
        raise SpecError(str(path), f"tables and lists nest more than {MAX_NESTING} deep", NESTING_FIX) from None
    except FileNotFoundError:
        raise SpecError(str(path), "file not found", "check the path given with --spec") from None
    except UnicodeDecodeError:
        raise SpecError(str(path), "not UTF-8 text", "give a TOML file") from None
    except OSError as exc:
        raise SpecError(str(path), f"cannot be read ({exc.strerror})", "check the path given with --spec") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"invalid TOML ({exc})", "fix the TOML syntax") from None
    if problem := nesting_problem(table):
        raise SpecError(str(path), problem, NESTING_FIX)
    return table


SCHEMA_FILE = "wheelflow.schema.json"


def schema_text() -> str:
    """``wheelflow.schema.json`` as committed: stable key order, one trailing newline."""
    return json.dumps(spec_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # python -m wheelflow.config.spec [PATH]: regenerate the published schema
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / SCHEMA_FILE
    out.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {out}")


def expanded_table(spec: ReleaseSpec) -> list[dict[str, Any]]:
    """The spec's cells as rows, after exclude, include and rules: what `wheelflow matrix` shows.

    Keys are the spec's own (kebab-case); a spec without a matrix has no rows.
    """
    if spec.matrix is None:
        return []
    return [
        {
            "cell": cell.name,
            "values": dict(cell.values),
            "image": cell.image,
            "runtime-image": cell.runtime_image,
            "local-version": cell.local_version,
            "env": dict(cell.env),
            "build-requires": list(cell.build_requires),
            "gpu": cell.gpu,
            "gpu-archs": list(cell.gpu_archs) if isinstance(cell.gpu_archs, tuple) else cell.gpu_archs,
            "gpu-archs-policy": cell.gpu_archs_policy,
            "timeout": cell.timeout,
        }
        for cell in spec.matrix.cells
    ]
