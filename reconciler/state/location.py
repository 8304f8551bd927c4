"""Where a state store lives, as `--state` (or RECONCILER_STATE) says: a path to an SQLite file,
or a `postgresql://` libpq URL. Pure, and light to import (the CLI reads it for every command)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

StateLocation = Path | str  # a str is always a PostgreSQL URL (see `state_location`)
_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: StateLocation) -> bool:
    return isinstance(location, str) and location.startswith(_SCHEMES)


def state_location(text: str) -> StateLocation:
    """`--state`'s value as a location: a URL stays text, anything else is a path."""
    return text if is_postgres_url(text) else Path(text)


def describe_location(location: StateLocation) -> str:
    """The location for messages and logs: a URL without its password."""
    if not is_postgres_url(location):
        return str(location)
    parts = urlsplit(str(location))
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"
