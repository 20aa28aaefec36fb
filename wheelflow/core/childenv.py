"""The environment of every process and container wheelflow starts, built from an allow-list.

A child (a build backend running the project's setup.py, a smoke command, pip, git, twine) gets
what it needs to run and nothing more. It is never wheelflow's own environment minus a deny-list:
any variable nobody listed (an index password, PREFECT_API_KEY, a cloud token) would then reach
code the release does not control. A build that needs more declares it: values in
``build.env``, or names in ``build.pass-env`` (refused for wheelflow's own secrets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from wheelflow.core import secretenv
from wheelflow.core.errors import SpecError
from wheelflow.core.redaction import register_secret

#: Variables that describe how to reach the network and what to trust: the same on a host and in a container.
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)
LOCALE_VARIABLES = ("LANG", "LANGUAGE", "TZ")
LOCALE_PREFIX = "LC_"
#: wheelflow's own variables that are facts of the release, never secrets.
RELEASE_VARIABLES = ("WHEELFLOW_VERSION", "WHEELFLOW_LOCAL_VERSION", "WHEELFLOW_RELEASE_VERSION", "SOURCE_DATE_EPOCH")
#: Variables that name places on this host: passed to host processes, never into a container.
HOST_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TEMP",
    "TMP",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CUDA_HOME",
    "CUDA_PATH",
)
PORTABLE_VARIABLES = (*PROXY_VARIABLES, *LOCALE_VARIABLES, *RELEASE_VARIABLES)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# wheelflow's namespace holds its credentials, webhooks and SMTP settings; twine's and Prefect's
# hold theirs. None of them is ever a build's business.
_WHEELFLOW_SECRET_RE = re.compile(
    r"^(WHEELFLOW_\w+|TWINE_\w+|PREFECT_API_KEY|PREFECT_API_AUTH_STRING|\w*SMTP_\w*PASSWORD\w*|GIT_ASKPASS)$",
    re.IGNORECASE,
)
# A passed variable whose name says it holds a secret is masked in every log and report.
_SECRET_NAME_RE = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|_KEY$|^KEY$|AUTH|CREDENTIAL", re.IGNORECASE)


def pass_env_problem(names: object) -> tuple[str, str] | None:
    """Why ``names`` may not be passed to builds (problem, fix), or None when they may."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"{names!r} is not a list of variable names", 'write e.g. pass-env = ["HF_TOKEN"]'
    for name in names:
        if not _NAME_RE.match(name):
            return f"{name!r} is not an environment variable name", "use letters, digits and '_'"
        if _WHEELFLOW_SECRET_RE.match(name):
            return (
                f"{name} is wheelflow's own (a credential, a webhook or a setting) and never reaches a build",
                "remove it; give the build its own variable, or a value in build.env",
            )
    return None


def check_pass_env(names: object, key: str = "build.pass-env") -> tuple[str, ...]:
    """The names to pass to builds, or SpecError naming the one that may not be passed."""
    refused = pass_env_problem(names)
    if refused:
        raise SpecError(key, *refused)
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]


def child_env(
    *, extra: Mapping[str, str] | None = None, pass_env: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a process on this host: the allow-listed variables of ``environ``
    (default: this process's), the ``pass_env`` names present there, then ``extra`` on top."""
    environ = secretenv.environ() if environ is None else environ
    allowed = {*HOST_VARIABLES, *PORTABLE_VARIABLES}
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(LOCALE_PREFIX)}
    return _finish(env, extra, pass_env, environ)


def container_env(
    *, extra: Mapping[str, str] | None = None, pass_env: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a container: like :func:`child_env` without the variables that name
    places on this host (PATH, HOME, CA files, CUDA_HOME: the image has its own)."""
    environ = secretenv.environ() if environ is None else environ
    env = {k: v for k, v in environ.items() if k in PORTABLE_VARIABLES or k.startswith(LOCALE_PREFIX)}
    return _finish(env, extra, pass_env, environ)


def _finish(
    env: dict[str, str], extra: Mapping[str, str] | None, pass_env: Sequence[str], environ: Mapping[str, str]
) -> dict[str, str]:
    for name in check_pass_env(list(pass_env)):
        if name in environ:
            env[name] = environ[name]
            if _SECRET_NAME_RE.search(name):
                register_secret(environ[name])
    for name in PROXY_VARIABLES:  # a proxy URL may carry a password
        if name in env:
            register_secret(_password(env[name]))
    env.update(extra or {})
    return env


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
