"""Secrets are never written or printed: one scrubber for every text that may carry a server's words or a URL.

A server (or a proxy in front of it) may quote the API key it was sent in an error body or
header, and a ``--base-url`` may hold credentials (``http://user:KEY@host``). Whatever can
carry such text passes through ``scrub`` before it reaches a file or the terminal: failure
reasons (``failures.jsonl``), error messages and warnings, the run manifest's teacher
description, progress text, the CLI's summary.

``scrub`` removes the value of every API key it knows: the ones in the environment variables
the teachers read (``KEY_VARIABLES``), every key ``register``\\ ed when a teacher was built
(one read from an ``--env-file`` included), and any ``extra`` ones passed to the call; and it
removes the user information of every URL. Keys shorter than ``MIN_SECRET_LENGTH`` are not
treated as secrets (``none``, the placeholder a local server gets, would otherwise be cut
out of every message).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
"""Environment variables whose values are secrets wherever they appear."""
MIN_SECRET_LENGTH = 8
REDACTED = "[redacted]"

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s\"'<>]+)@")
_registered: set[str] = set()
_lock = threading.Lock()


def url_secrets(url: str | None) -> list[str]:
    """The credentials in ``url``'s user information: its password, or a lone user name that is long enough to
    be a token."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return []
    found = [password] if password else [username] if username else []
    return [value for value in found if len(value) >= MIN_SECRET_LENGTH]


def register(*values: str | None) -> None:
    """Treat ``values`` (API keys, URL credentials) as secrets in every later ``scrub`` of this process."""
    with _lock:
        _registered.update(value for value in values if value and len(value) >= MIN_SECRET_LENGTH)


def known_secrets(extra: tuple[str | None, ...] = ()) -> list[str]:
    """Every secret value ``scrub`` removes, longest first, with their URL-encoded forms."""
    with _lock:
        values = set(_registered)
    values.update(os.environ.get(variable) or "" for variable in KEY_VARIABLES)
    values.update(value or "" for value in extra)
    values = {value for value in values if len(value) >= MIN_SECRET_LENGTH}
    values |= {quote(value, safe="") for value in values}
    return sorted(values, key=len, reverse=True)


def scrub(text: Any, *extra: str | None) -> str:
    """``text`` (made a string) without any known secret (see the module doc) nor URL user information."""
    text = str(text)
    for value in known_secrets(extra):
        if value in text:
            text = text.replace(value, REDACTED)
    return _URL_USERINFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)


def scrub_url(url: str | None) -> str | None:
    """``url`` without credentials (``None`` stays ``None``), fit for a manifest or a message."""
    return None if url is None else scrub(url, *url_secrets(url))


def scrub_data(value: Any, *extra: str | None) -> Any:
    """``value`` with every string inside (dict keys and values, list and tuple items) scrubbed."""
    if isinstance(value, str):
        return scrub(value, *extra)
    if isinstance(value, dict):
        return {scrub_data(key, *extra): scrub_data(item, *extra) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_data(item, *extra) for item in value]
    if type(value) is tuple:
        return tuple(scrub_data(item, *extra) for item in value)
    return value
