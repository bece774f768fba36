"""Secrets and redaction, decided in one place.

A :class:`Secret` never shows itself. Text from a server or the configuration is redacted
where it enters: a whole conninfo with :func:`redact_conninfo` (libpq's parser), a URL with
:func:`redact_url`, free text (an error message) with :func:`redact_text`. Where text leaves
the process (CLI output, TUI notifications, the audit log) :func:`redact_known` redacts once
more by the values of every secret this process read (:func:`remember`), and
:func:`child_environment` is the environment every child process gets: without them.
:func:`redacted` is the JSON-ready copy of a config or status with every Secret as ``***``.
"""

from __future__ import annotations

import os
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


# Free text (an error message, a log line) that embeds a conninfo, a URL or a header cannot
# be handed to a parser: the secret is somewhere inside a sentence. These patterns are the
# fallback for that case only; a whole conninfo or URL goes through redact_conninfo /
# redact_url, which use libpq's and urllib's own parsers.
#   key=value / key: value / "key": "value" (libpq, env, YAML, JSON), the value unquoted,
#   'single' or "double" quoted, or in postgresql.auto.conf's doubled quotes (''a b'').
_SECRET_KEYS = r"password|passwd|pgpassword|sslpassword|[a-z_-]*token|client-key-data"  # noqa: S105
_CONNINFO_PASSWORD = re.compile(
    r"(?i)(?<![a-z0-9_])([\"']?)(" + _SECRET_KEYS + r")\1(\s*[=:]\s*)"
    r"(''(?:[^']|'''')*''|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)"
)
# scheme://user:password@host, up to the last @ before the path (an unencoded @ in a
# password is a common mistake, and libpq accepts it).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):([^\s/]*)@")
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}")
# Conninfo keywords whose values are secrets: the password, and the client key's passphrase.
CONNINFO_SECRET_KEYS = ("password", "sslpassword")


def redact_text(text: str, secrets: Iterable[Secret | str] = ()) -> str:
    """Scrub secret values and any ``password=...`` / ``user:pw@`` / bearer token from a
    message."""
    values = sorted(
        {s.reveal() if isinstance(s, Secret) else s for s in secrets} - {""},
        key=len,
        reverse=True,  # longest first so a secret containing another is fully replaced
    )
    for value in values:
        text = text.replace(value, REDACTED)
    text = _CONNINFO_PASSWORD.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{REDACTED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m[1]}:{REDACTED}@", text)


def _is_secret_key(key: str) -> bool:
    return re.fullmatch(_SECRET_KEYS, key, flags=re.IGNORECASE) is not None


def redact_url(url: str) -> str:
    """A URL with the password of its userinfo and any ``password``/``token`` query value
    replaced by ``***`` (urllib's parser; text it cannot parse falls back to
    :func:`redact_text`)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return redact_text(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_is_secret_key(k) for k, _ in pairs):
                query = urlencode([(k, REDACTED if _is_secret_key(k) else v)
                                   for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # e.g. a port that is not a number
        return redact_text(url)


def redact_conninfo(conninfo: str) -> str:
    """A libpq connection string (``key=value`` or a ``postgresql://`` URI) with its
    ``password`` and ``sslpassword`` replaced by ``***``. Parsed by libpq itself (psycopg's
    ``conninfo_to_dict``), so quoting and escapes are read exactly as the server reads them;
    a string libpq cannot parse falls back to :func:`redact_text`. Returned unchanged when it
    carries no secret; otherwise rebuilt in libpq's ``key=value`` form (a URI keeps its
    form: :func:`redact_url`)."""
    if "://" in conninfo.split("=", 1)[0]:
        return redact_url(conninfo)
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(conninfo)
        if not any(key in params for key in CONNINFO_SECRET_KEYS):
            return conninfo
        return make_conninfo("", **{k: REDACTED if k in CONNINFO_SECRET_KEYS else v
                                    for k, v in params.items()})
    except PsycopgError:
        return redact_text(conninfo)


# --------------------------------------------------------------------------- known secrets
#
# The values of every secret this process read (configuration, kubeconfig tokens) and the
# environment variables they came from. Each boundary redacts what it knows as text enters;
# these let the last points where text leaves (CLI output, TUI notifications, the audit log)
# redact once more by value, and let every child process start without them.

_KNOWN: set[str] = set()
_ENV_NAMES: set[str] = set()
_TAKEN_ENV: dict[str, str] = {}  # variables a secret was read from, taken out of os.environ
# libpq reads a password from here; sfops never passes one that way, so no child needs it.
_SECRET_ENV = frozenset({"PGPASSWORD"})


def remember(secret: Secret | str | None, *, env: str | None = None) -> None:
    """Record a secret value (and the environment variable it came from, if any)."""
    if env:
        _ENV_NAMES.add(env)
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value:
        _KNOWN.add(value)


def take_env(name: str) -> str | None:
    """The secret in the environment variable ``name``, taken out of this process's
    environment as it is read: a child that a library starts on its own, without
    :func:`child_environment` (``ctypes.util.find_library`` runs ``gcc`` and ``ld`` when
    asyncssh is imported), inherits the process's environment, and must not find it there.
    Read again (a configuration loaded once more), it is the value first read. Remembered
    (:func:`remember`) with its variable."""
    value = os.environ.pop(name, None)
    if value is not None:
        _TAKEN_ENV[name] = value
    value = _TAKEN_ENV.get(name)
    if value is not None:
        remember(value, env=name)
    return value


def take_configured_env(path: Path) -> None:
    """Take every variable a ``*password_env`` key of the configuration file at ``path``
    names out of this process's environment now (:func:`take_env`), before a command imports
    anything: importing asyncssh (an action module's executors) runs ``gcc`` and ``ld``
    through ``ctypes.util.find_library`` with this process's environment, and a command may
    import its action module before it loads its configuration (a fresh run's process
    sampler saw the password there). A file that cannot be read or parsed is left to the
    real load, which says why."""
    import tomllib

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    pending: list[Any] = [document]
    while pending:
        table = pending.pop()
        if isinstance(table, dict):
            for key, value in table.items():
                if isinstance(value, str) and key.endswith("password_env"):
                    take_env(value)
                elif isinstance(value, (dict, list)):
                    pending.append(value)
        elif isinstance(table, list):
            pending.extend(table)


def known_secrets() -> list[str]:
    return list(_KNOWN)


def forget_all() -> None:
    """Tests only: start from no known secrets (and no variable taken from the
    environment)."""
    _KNOWN.clear()
    _ENV_NAMES.clear()
    _TAKEN_ENV.clear()


def redact_known(text: str, secrets: Iterable[Secret | str] = ()) -> str:
    """:func:`redact_text` with every known secret value too: the last redaction, where text
    leaves the process."""
    return redact_text(text, [*_KNOWN, *secrets])


def scrub_known(text: str) -> str:
    """Every known secret value replaced by ``***``, and nothing else touched (no pattern):
    for whole documents leaving the process (CLI output, audit records), where a pattern
    could mangle legitimate text."""
    for value in sorted(_KNOWN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """A JSON-ready value (dicts, lists, strings) with :func:`scrub_known` applied to every
    string in it."""
    if isinstance(value, str):
        return scrub_known(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process (``pg_ctl`` and the postmaster it starts, nginx,
    the Kafka worker, a lock holder): this process's, without the variables a secret came
    from (``*_env`` keys), ``PGPASSWORD``, and any variable whose value holds a known
    secret. A password reaches a libpq tool through a 0600 passfile, never the environment."""
    env = os.environ if base is None else base
    known = [value for value in _KNOWN if value]
    return {name: value for name, value in env.items()
            if name not in _ENV_NAMES and name not in _SECRET_ENV
            and not any(secret in value for secret in known)}


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
