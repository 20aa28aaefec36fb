"""Redaction as a guarantee: every secret wheelflow reads is registered here once, and masked as
``***`` wherever text leaves the process: log records (wheelflow's, Prefect's and the API log
handler's), reports, artifacts, alerts, exception messages and subprocess output.

Code that reads a secret calls :func:`register_secret`; code that writes text a user or a server
will see calls :func:`redact`. The logging side (:func:`install_log_redaction`) is installed when
this module is imported (every wheelflow module imports it through wheelflow.core.errors) and again
by any registration that finds it missing, so a process that knows a secret cannot log it unmasked.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

MASK = "***"
#: Shorter values are not registered: masking every "ab" would destroy the logs, and a secret that
#: short protects nothing anyway.
MIN_SECRET_LENGTH = 4
#: Secrets of the environment that wheelflow never reads itself but must never show.
ENVIRONMENT_SECRETS = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_installed = False


#: The shortest piece of a secret masked when the secret is split across lines: shorter pieces
#: match ordinary text too often.
MIN_SPLIT_PART = 3
#: Pieces found anywhere in their lines (not only where a line ends or starts) are looked for in
#: secrets (and their encodings) of at least this length: in a shorter one, 3-letter pieces are
#: ordinary words ("sec" in one line, "ret" in the next).
MIN_SPLIT_SECRET = 10
#: The lines a split secret may spread over, first piece to last (other lines between included);
#: :class:`LineRedactor` holds this many lines less one back.
SPLIT_WINDOW = 5
#: The shortest stable inner part of a secret's encoding inside a longer base64/base32 stream
#: that is masked: shorter runs of those alphabets occur by chance.
MIN_STREAM_ENCODING = 8


def _inner_encodings(raw: bytes, group: int, encode: Any) -> set[str]:
    """The part of ``encode(stream)`` that is the same whatever bytes surround ``raw`` in the stream,
    for each offset of ``raw`` modulo the encoding's group size (3 bytes for base64, 5 for base32):
    the encoding of the whole groups ``raw`` fills alone. Base64 of an environment dump holds a
    secret at offset 1 or 2 two times in three, where the secret's own base64 is not found."""
    found = set()
    for offset in range(group):
        skip = (group - offset) % group  # the bytes that share a group with what comes before
        whole = raw[skip:]
        whole = whole[: len(whole) // group * group]
        if whole:
            found.add(encode(whole).decode())
    return {v for v in found if len(v) >= MIN_STREAM_ENCODING}


def encodings(value: str) -> set[str]:
    """The common encodings of a secret code might print to get it past exact-text masking: base64
    (standard and URL-safe, with and without padding, alone or inside a longer stream at any
    offset), base32 (alone or inside a stream), URL-encoding, hex (either case), reversed."""
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    b64url = base64.urlsafe_b64encode(raw).decode()
    b32 = base64.b32encode(raw).decode()
    found = {
        b64,
        b64.rstrip("="),
        b64url,
        b64url.rstrip("="),
        b32,
        b32.rstrip("="),
        quote(value, safe=""),
        quote_plus(value, safe=""),
        raw.hex(),
        raw.hex().upper(),
        value[::-1],
        *_inner_encodings(raw, 3, base64.b64encode),
        *_inner_encodings(raw, 3, base64.urlsafe_b64encode),
        *_inner_encodings(raw, 5, base64.b32encode),
    }
    return {v for v in found if v != value and len(v) >= MIN_SECRET_LENGTH}


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret for the rest of this process, with its common encodings
    (:func:`encodings`); empty and short values are ignored."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value not in _secrets:
            _secrets = tuple(sorted({*_secrets, value, *encodings(value)}, key=len, reverse=True))
    if not _installed:
        install_log_redaction()


def register_url(url: str | None) -> None:
    """A URL that is itself a secret (a webhook): the whole URL, its path (where webhook tokens
    live) and any password in it."""
    if not url:
        return
    register_secret(url)
    parts = urlsplit(url)
    register_secret(parts.password)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(path.strip("/")) >= MIN_SECRET_LENGTH:
        register_secret(path)


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    for name in ENVIRONMENT_SECRETS:
        register_secret(environ.get(name))


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and every one of ``extra``) replaced by ``***``, and
    every credential a URL in it carries (user:password@, a token as user name, ?token=...) masked."""
    secrets = _secrets
    more = [s for s in extra if s]
    if more:
        secrets = tuple(sorted({*secrets, *more}, key=len, reverse=True))
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "\n" in text and secrets:
        text = _mask_split(text, secrets)
        text = "\n".join(_mask_pieces(text.split("\n"), secrets))
    if "@" in text or "=" in text:
        text = mask_url_credentials(text)
    return text


def _mask_split(text: str, secrets: tuple[str, ...]) -> str:
    """Mask a secret printed across consecutive line breaks (``print(s[:5]); print(s[5:])``, pieces of
    any length): the text is read with its line breaks taken out, and each line's piece of a secret
    found there becomes ``***``."""
    flat = text.replace("\r", "").replace("\n", "")
    if not any(secret in flat for secret in secrets):  # the common case, without indexing every character
        return text
    keep = [i for i, c in enumerate(text) if c not in "\r\n"]  # flat[k] is text[keep[k]]
    masked = [False] * len(text)
    for secret in secrets:
        start = flat.find(secret)
        while start != -1:
            span = keep[start : start + len(secret)]
            if span[-1] - span[0] + 1 != len(secret):  # it does cross a line break
                for i in span:
                    masked[i] = True
            start = flat.find(secret, start + 1)
    if not any(masked):
        return text
    out, previous = [], False
    for i, c in enumerate(text):
        if masked[i]:
            if not previous:
                out.append(MASK)
        else:
            out.append(c)
        previous = masked[i]
    return "".join(out)


def _longest_prefix_in(secret: str, line: str) -> int:
    """The length of the longest start of ``secret`` found in ``line`` (0 when under MIN_SPLIT_PART)."""
    if secret[:MIN_SPLIT_PART] not in line:
        return 0
    low, high = MIN_SPLIT_PART, len(secret)  # secret[:low] is in line; a longer start is only if a shorter one is
    while low < high:
        middle = (low + high + 1) // 2
        if secret[:middle] in line:
            low = middle
        else:
            high = middle - 1
    return low


def _shortest_suffix_in(secret: str, line: str) -> int:
    """Where the longest end of ``secret`` found in ``line`` starts (len(secret) when under MIN_SPLIT_PART)."""
    return len(secret) - _longest_prefix_in(secret[::-1], line[::-1])


def _mask_pieces(lines: list[str], secrets: tuple[str, ...]) -> list[str]:
    """Mask a secret printed in two or three pieces on lines at most SPLIT_WINDOW apart, each piece
    anywhere in its line and other lines between (``print("a", s[:6]); print("noise");
    print("b", s[6:12]); print(s[12:])``): the first piece is a start of the secret in one line, the
    last an end of it in a later line, and what lies between them, if anything, is in a line between."""
    lines = list(lines)
    whole = "\n".join(lines)
    for secret in secrets:
        if len(secret) < MIN_SPLIT_SECRET or secret[:MIN_SPLIT_PART] not in whole:
            continue
        starts = [_longest_prefix_in(secret, line) for line in lines]
        if not any(starts):
            continue
        ends = [_shortest_suffix_in(secret, line) for line in lines]
        pieces: list[tuple[int, str]] = []
        for first, start in enumerate(starts):
            if not start:
                continue
            for last in range(first + 1, min(len(lines), first + SPLIT_WINDOW)):
                end = ends[last]
                if end == len(secret):
                    continue
                if end <= start:  # two pieces: the start in one line, the rest in another
                    pieces += [(first, secret[:start]), (last, secret[end:])]
                    continue
                cut = min(start, end - MIN_SPLIT_PART)  # a middle piece of at least MIN_SPLIT_PART
                if cut < MIN_SPLIT_PART:
                    continue
                between = next((i for i in range(first + 1, last) if secret[cut:end] in lines[i]), None)
                if between is not None:
                    pieces += [(first, secret[:start]), (between, secret[cut:end]), (last, secret[end:])]
        for index, piece in sorted(pieces, key=lambda p: len(p[1]), reverse=True):
            lines[index] = lines[index].replace(piece, MASK)
    return lines


class LineRedactor:
    """Redacts a stream of output lines, holding SPLIT_WINDOW - 1 lines back so that a secret split
    over lines near each other is masked in each of them: ``feed`` returns the lines ready to show,
    ``close`` the rest."""

    def __init__(self) -> None:
        self._pending: list[str] = []

    def feed(self, line: str) -> Iterator[str]:
        self._pending.append(line)
        if len(self._pending) < SPLIT_WINDOW:
            return iter(())
        self._pending = redact("\n".join(self._pending)).split("\n")
        return iter((self._pending.pop(0),))

    def close(self) -> Iterator[str]:
        pending, self._pending = self._pending, []
        return iter(redact("\n".join(pending)).split("\n") if pending else ())


#: Query parameters that carry a credential in the URLs people paste (forges, object stores, webhooks);
#: in a fragment (``#token=...``) too.
SECRET_QUERY_PARAMETERS = (
    "access_token",
    "private_token",
    "oauth_token",
    "token",
    "auth",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
)
#: A URL's userinfo: ``scheme://USERINFO@`` (``git+https://`` and every other scheme included).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>?#]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;#](?:" + "|".join(re.escape(n) for n in SECRET_QUERY_PARAMETERS) + r")=)(?P<value>[^&#\s'\"<>]+)",
    re.IGNORECASE,
)
#: The scp form of a git remote, ``USER@host:path`` (no scheme): its user is masked unless it is ``git``.
_SCP = re.compile(r"^(?P<user>[^\s@/:]+(?::[^\s@/]*)?)@(?P<rest>[A-Za-z0-9.-]+:(?!//).*)$", re.DOTALL)
#: The scp form inside free text (git's own messages quote it): ``USER@host.tld:path``.
_SCP_IN_TEXT = re.compile(
    r"(?<![\w.+/@-])(?P<user>[\w.~-]+(?::[^\s@/'\"]*)?)@(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):(?=[\w~./-])"
)
#: A user name alone that is no credential: the conventional ssh user of every forge.
PLAIN_SSH_USERS = ("git",)


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match["userinfo"]
    if userinfo in PLAIN_SSH_USERS and match["scheme"].lower().startswith("ssh"):
        return match[0]
    return f"{match['scheme']}{MASK}@"


def mask_url_credentials(text: str) -> str:
    """Every URL credential in ``text`` masked: userinfo (``user:password@``, and a user name alone, as
    tokens are often given), the user of the scp form (``USER@host:path``) other than ``git``, and
    secret query parameters (``?token=``, ``?access_token=``, signatures)."""
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    text = _SCP_IN_TEXT.sub(lambda m: m[0] if m["user"] in PLAIN_SSH_USERS else f"{MASK}@{m['host']}:", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)


def url_credentials(url: str) -> list[str]:
    """What in ``url`` is a credential, by kind (empty when none): "user:password", "a user name in
    an http(s) URL", "a token in the query (?token=)" or in the fragment (#token=), "a user name in
    scp form"."""
    found = []
    scp = _SCP.match(url) if "://" not in url else None
    if scp:
        if scp["user"] not in PLAIN_SSH_USERS:
            found.append("a user name in scp form (USER@host:path)" if ":" not in scp["user"] else "user:password")
        return found
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removeprefix("git+")
    try:
        username, password = parts.username, parts.password
    except ValueError:
        username, password = "?", None
    if password is not None:
        found.append("user:password")
    elif username and scheme in ("http", "https"):
        found.append("a user name in an http(s) URL (tokens are given that way)")
    query = _QUERY_SECRET.search("?" + parts.query) if parts.query else None
    if query:
        found.append(f"a credential in the query ({query['name'].lstrip('?&;')})")
    fragment = _QUERY_SECRET.search("#" + parts.fragment) if parts.fragment else None
    if fragment:
        found.append(f"a credential in the fragment ({fragment['name'].lstrip('#&;')})")
    return found


def redact_value(value: Any) -> Any:
    """Strings redacted, lists/tuples/dicts redacted inside; anything else as it is (for reports and payloads)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def _redact_record(record: logging.LogRecord) -> None:
    if not _secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it itself; show its parts masked
        message = f"{record.msg} {record.args}"
    masked = redact(message)
    if masked != message:
        # The args are folded in: a secret can hide in any argument's str().
        record.msg, record.args = masked, ()
    traceback = record.exc_text or (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
    if traceback and redact(traceback) != traceback:
        # Formatters print exc_text as it is; without exc_info no handler can render the original again.
        record.exc_text, record.exc_info = redact(traceback), None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message, arguments and traceback; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_FILTER = RedactingFilter()
#: Loggers whose own records and handlers get the filter (Prefect's tree holds the API log handler).
REDACTED_LOGGERS = (
    "wheelflow",
    "prefect",
    "prefect.flow_runs",
    "prefect.task_runs",
    "prefect.extra",
    "prefect.workers",
    "",
)


def install_log_redaction() -> None:
    """Mask secrets in every log record of this process. Idempotent; safe to call at flow start.

    A record factory masks each record when it is created, whatever logger or handler it meets
    later (handlers Prefect configures after this call included). The filter is also put on
    wheelflow's and Prefect's loggers and on their handlers present now, for records made by a
    factory someone installs after this one.
    """
    global _installed
    with _lock:
        first = not _installed
        if first:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name) if name else logging.getLogger()
        for holder in (logger, *logger.handlers):
            if _FILTER not in holder.filters:
                holder.addFilter(_FILTER)
    if first:
        register_environment_secrets()


# Every wheelflow process imports this module (through wheelflow.core.errors): from then on no record
# it creates can carry a registered secret, nor PREFECT_API_KEY.
install_log_redaction()


def redact_url(url: str) -> str:
    """``url`` with every credential in it masked as ``***``, so it can be shown: userinfo (any
    scheme, ``git+https://`` included), secret query parameters, and the user of the scp form
    ``USER@host:path`` (unless it is the conventional ``git``)."""
    scp = _SCP.match(url) if "://" not in url else None
    if scp:
        user = scp["user"] if scp["user"] in PLAIN_SSH_USERS else MASK
        return mask_url_credentials(f"{user}@{scp['rest']}")
    return mask_url_credentials(url)
