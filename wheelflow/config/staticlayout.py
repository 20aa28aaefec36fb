"""A static index's declared shape, checked when the spec is read: store and public URLs, the sub-index layout."""

from __future__ import annotations

from urllib.parse import urlsplit

from wheelflow.config.bounds import TemplateRefused, quoted, template_fields
from wheelflow.core.errors import StaticIndexError
from wheelflow.core.redaction import redact_url

DEFAULT_LAYOUT = "{local_version}"


LAYOUT_FIELDS = ("local_version",)


def check_store_url(url: str, key: str = "store-url") -> None:
    """Refuse a URL that embeds credentials: keys go through the environment or storage options."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise StaticIndexError(
            f"{key} {redact_url(url)!r} embeds credentials; fix: remove them from the URL and "
            "pass them through the environment (e.g. AWS_ACCESS_KEY_ID) or storage options"
        )
    if not parts.scheme and not url.startswith("/"):
        raise StaticIndexError(f"{key} {url!r} is not a URL; fix: write e.g. file:///srv/whl or s3://bucket/whl")


def check_public_url(url: str, key: str = "public-url") -> None:
    check_store_url(url, key)
    if urlsplit(url).scheme not in ("http", "https", "file"):
        raise StaticIndexError(f"{key} {url!r} is not an http(s) URL; fix: give the URL installers read the index at")


def check_layout(layout: str) -> None:
    """A layout names only known fields and yields a relative path below the store root."""
    try:
        fields = set(template_fields(layout))  # plain names: {local_version:>99999999} would render 100 MB
    except TemplateRefused as exc:
        raise StaticIndexError(f"layout {exc}; fix: write e.g. {DEFAULT_LAYOUT!r}") from None
    unknown = fields - set(LAYOUT_FIELDS)
    if unknown or not fields:
        raise StaticIndexError(
            f"layout {quoted(layout)} must name {{local_version}} and no other field "
            f"({', '.join(sorted(unknown)) or 'none named'}); fix: write e.g. {DEFAULT_LAYOUT!r}"
        )
    sample = layout.format(local_version="cu130")
    if sample.startswith("/") or any(part in ("", ".", "..") for part in sample.split("/")):
        raise StaticIndexError(
            f"layout {layout!r} must be a relative path without '..' or empty parts; "
            f"fix: write e.g. {DEFAULT_LAYOUT!r} or 'whl/{{local_version}}'"
        )
