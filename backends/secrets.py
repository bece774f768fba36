"""Secrets and redaction, decided in one place.

A :class:`Secret` never shows itself; :func:`redact_text` scrubs known secret values and any
``password=…`` / ``user:password@`` from a message; :func:`redacted` is the JSON-ready copy of
a config or status with every Secret as ``***``. Every front end redacts through these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

REDACTED = "***"


class Secret:
    """A string that never shows itself: ``str``/``repr``/f-strings give ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"'{REDACTED}'"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:  # pickling/copying would otherwise be the only leak path
        return (Secret, (self._value,))


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if is_dataclass(value) and not isinstance(value, type):
        plain = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        # A configuration's backend sections read as top-level tables, as in the file.
        sections = plain.pop("sections", None) if f"{type(value).__name__}" == "SfopsConfig" \
            else None
        return {**plain, **(sections or {})}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def redacted(config: Any) -> Any:
    """A JSON-ready plain copy of a config (or any dataclass) with every Secret as ``***``."""
    return _plain(config)


# key=value conninfo (password=x, password='a b'), URLs (scheme://user:pw@host), env style.
_CONNINFO_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pgpassword)(\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\S+)"
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):([^@\s]*)@")


def redact_text(text: str, secrets: Iterable[Secret | str] = ()) -> str:
    """Scrub secret values and any ``password=...`` / ``user:pw@`` from a message."""
    values = sorted(
        {s.reveal() if isinstance(s, Secret) else s for s in secrets} - {""},
        key=len,
        reverse=True,  # longest first so a secret containing another is fully replaced
    )
    for value in values:
        text = text.replace(value, REDACTED)
    text = _CONNINFO_PASSWORD.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m[1]}:{REDACTED}@", text)


def secrets_in(value: Any) -> list[Secret]:
    """Every Secret inside a (nested) config value."""
    if isinstance(value, Secret):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        return [s for f in fields(value) for s in secrets_in(getattr(value, f.name))]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in secrets_in(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in secrets_in(v)]
    return []
