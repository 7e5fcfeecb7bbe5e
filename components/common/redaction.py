"""URLs as they may be shown: in logs, error messages, metadata and reports.

A URL can carry secrets in two places: its user info (`https://user:password@host/`) and its query
(a signed URL's `X-Goog-Signature=...`, `sig=...`, `token=...`). Both go; the path stays, so the
message still says which file or server it was about.
"""

from __future__ import annotations

import re

REDACTED_QUERY = "?..."

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# A query after a path with no scheme, as HTTP libraries quote a request ("url: /x.zip?sig=...").
_BARE_QUERY = re.compile(r"(?<=[^\s'\"<>?])\?[^\s'\"<>]*=[^\s'\"<>]*")


def redact_url(url: str) -> str:
    """`url` without user info and with its query (if any) as "?..."; a plain path unchanged."""
    url = str(url)
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    # Up to the first "/", not the first "?" or "#": a password holding those (unescaped) still
    # ends at the last "@".
    authority, slash, path = rest.partition("/")
    location = (authority.rpartition("@")[2] + slash + path).split("#", 1)[0]
    location, _, query = location.partition("?")
    return f"{scheme}://{location}" + (REDACTED_QUERY if query else "")


def has_user_info(url: str) -> bool:
    """Whether `url` names a user (and maybe a password) before its host."""
    scheme, separator, rest = str(url).strip().partition("://")
    return bool(separator) and "@" in rest.partition("/")[0]


def redact_text(text) -> str:
    """`text` (an exception's, typically) with every URL in it redacted, and bare queries too."""
    text = _URL.sub(lambda match: redact_url(match.group(0)), str(text))
    return _BARE_QUERY.sub(REDACTED_QUERY, text)
