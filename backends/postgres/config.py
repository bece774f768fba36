"""The ``[postgres]`` configuration section, parsed by the backend that uses it (the generic
reader and ``[sfops]``/``[executors]`` live in :mod:`backends.config`).

TLS and the usual libpq files: ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey`` (each also
per member, overriding the section's), ``sslpassword`` (a secret), ``service`` (per member
too), ``servicefile`` and ``passfile``. A file that does not exist is a configuration error
naming its key, so a typo is found when the file is read, not at 03:00 as "certificate verify
failed". ``sslmode`` defaults to ``verify-full`` when a CA is given (else libpq's default);
a verifying mode without a CA is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from backends.config import ExecutorConfig, Reader, check_executor_ref, toml_key
from backends.secrets import Secret

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING = ("verify-ca", "verify-full")
# Keys a member may set to override the section's.
MEMBER_TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "service")
SYSTEM_CA = "system"  # libpq: the system's trusted CAs (verify-full only)


@dataclass(frozen=True)
class PostgresMember:
    name: str
    host: str
    port: int = 5432
    executor: str = "local"
    data_dir: Path | None = None
    bin_dir: Path | None = None
    os_user: str | None = None
    # The member's effective TLS settings (its own, else the section's) and service.
    sslmode: str | None = None
    sslrootcert: str | None = None  # a path, or "system"
    sslcert: Path | None = None
    sslkey: Path | None = None
    service: str | None = None
    overrides: tuple[str, ...] = ()  # the keys the member sets itself

    def config_key(self, name: str) -> str:
        """Where ``name`` comes from, for messages: ``[postgres.members.pg-1] sslrootcert``
        when the member sets it, else ``[postgres] sslrootcert``."""
        return f"[{self._table(name)}] {name}"

    def dotted_key(self, name: str) -> str:
        """As the configuration reader names keys: ``postgres.members.pg-1.sslrootcert``."""
        return f"{self._table(name)}.{name}"

    def _table(self, name: str) -> str:
        return (f"postgres.members.{toml_key(self.name)}" if name in self.overrides
                else "postgres")


@dataclass(frozen=True)
class PgIdentity:
    """A role sfops connects as, and its password (None: libpq finds one, or none needed)."""

    user: str
    password: Secret | None = None


@dataclass(frozen=True)
class PostgresConfig:
    dbname: str
    user: str
    members: Mapping[str, PostgresMember]
    password: Secret | None = None
    connect_timeout: float = 3.0
    statement_timeout: float = 5.0
    max_lag_on_failover: int = 1048576
    # Least privilege, as [kubernetes] readonly_kubeconfig / operator_kubeconfig: polls (every
    # mode) connect as the read-only role, e.g. one granted pg_monitor; actions (promote,
    # CHECKPOINT, slots, pg_rewind's source) as the operator role. Either falls back to
    # ``user``/``password``.
    readonly_user: str | None = None
    readonly_password: Secret | None = None
    operator_user: str | None = None
    operator_password: Secret | None = None
    sslpassword: Secret | None = None  # the passphrase of an encrypted sslkey
    servicefile: Path | None = None  # libpq's PGSERVICEFILE (libpq has no keyword for it)
    passfile: Path | None = None

    @property
    def readonly_identity(self) -> PgIdentity:
        """Who the polls connect as (in a read-only session, whoever it is)."""
        if self.readonly_user is None:
            return PgIdentity(self.user, self.password)
        return PgIdentity(self.readonly_user, self.readonly_password)

    @property
    def operator_identity(self) -> PgIdentity:
        """Who the actions connect as. Read-only mode never builds an action, so never uses
        it."""
        if self.operator_user is None:
            return PgIdentity(self.user, self.password)
        return PgIdentity(self.operator_user, self.operator_password)


def _file(table: Reader, name: str) -> Path | None:
    """An optional path key naming a file that must exist (checked now, named on failure)."""
    path: Path | None = table.path(name, None)
    if path is not None and not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        table.fail(name, f"{path} {what}")
    return path


def _tls(table: Reader) -> dict[str, object]:
    """The TLS keys ``table`` sets (a member's or the section's), validated one by one."""
    values: dict[str, object] = {}
    if "sslmode" in table.data:
        mode = table.string("sslmode")
        if isinstance(mode, str) and mode and mode not in SSLMODES:
            table.fail("sslmode", f'expected one of {", ".join(SSLMODES)}, got "{mode}"')
        values["sslmode"] = mode
    if "sslrootcert" in table.data:
        raw = table.string("sslrootcert")
        values["sslrootcert"] = (raw if raw == SYSTEM_CA else
                                 str(_file(table, "sslrootcert") or ""))
    for name in ("sslcert", "sslkey"):
        if name in table.data:
            values[name] = _file(table, name)
    if "service" in table.data:
        values["service"] = table.string("service")
    return values


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _path(value: object) -> Path | None:
    return value if isinstance(value, Path) else None


def _check_tls(table: Reader, member: PostgresMember) -> None:
    """The member's effective settings make sense together; problems name the key that has
    to change (on the member when it set it, else on the section: reported once)."""
    def fail(key: str, what: str) -> None:
        problem = f"{table.file}: {member.dotted_key(key)}: {what}"
        if problem not in table.problems:
            table.problems.append(problem)

    if member.sslmode in VERIFYING and not member.sslrootcert and not member.service:
        fail("sslmode", f'"{member.sslmode}" needs sslrootcert: the CA file that signed the '
             f'servers\' certificates (or "{SYSTEM_CA}" for the system\'s CAs)')
    if member.sslrootcert == SYSTEM_CA and member.sslmode != "verify-full":
        fail("sslrootcert", f'"{SYSTEM_CA}" needs sslmode = "verify-full" (libpq\'s rule)')
    if (member.sslcert is None) != (member.sslkey is None):
        missing = "sslkey" if member.sslkey is None else "sslcert"
        given = "sslcert" if missing == "sslkey" else "sslkey"
        fail(given, f"a client certificate needs both sslcert and sslkey ({missing} missing)")


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]) -> PostgresConfig | None:
    table = root.table("postgres")
    if table is None:
        return None
    section_tls = _tls(table)
    members: dict[str, PostgresMember] = {}
    for member in table.subtables("members", required=True):
        executor = member.string("executor", "local")
        check_executor_ref(member, "executor", executor, executors)
        own = _tls(member)
        tls = {**section_tls, **own}
        if "sslmode" not in tls and tls.get("sslrootcert"):
            tls["sslmode"] = "verify-full"  # a CA was given: verify the server, name included
        members[member.name] = PostgresMember(
            name=member.name,
            host=member.string("host"),
            port=member.port("port", 5432),
            executor=executor,
            data_dir=member.path("data_dir", None),
            bin_dir=member.path("bin_dir", None),
            os_user=member.string("os_user", None),
            sslmode=_text(tls.get("sslmode")),
            sslrootcert=_text(tls.get("sslrootcert")),
            sslcert=_path(tls.get("sslcert")),
            sslkey=_path(tls.get("sslkey")),
            service=_text(tls.get("service")),
            overrides=tuple(sorted(own)),
        )
        _check_tls(member, members[member.name])
        member.finish()
    sslpassword = table.secret("sslpassword")
    if sslpassword is not None and all(m.sslkey is None for m in members.values()):
        table.fail("sslpassword", "given, but no sslkey is configured (it is the passphrase "
                   "of an encrypted client key)")
    config = PostgresConfig(
        dbname=table.string("dbname"),
        user=table.string("user"),
        password=table.secret("password"),
        connect_timeout=table.number("connect_timeout", 3.0),
        statement_timeout=table.number("statement_timeout", 5.0),
        max_lag_on_failover=table.integer("max_lag_on_failover", 1048576),
        members=MappingProxyType(members),
        readonly_user=table.string("readonly_user", None),
        readonly_password=_role_secret(table, "readonly"),
        operator_user=table.string("operator_user", None),
        operator_password=_role_secret(table, "operator"),
        sslpassword=sslpassword,
        servicefile=_file(table, "servicefile"),
        passfile=_file(table, "passfile"),
    )
    table.finish()
    return config


def _role_secret(table: Reader, role: str) -> Secret | None:
    """``<role>_password[_file|_env]``, which only means something with ``<role>_user``."""
    secret = table.secret(f"{role}_password")
    if secret is not None and f"{role}_user" not in table.data:
        given = next(k for k in (f"{role}_password_file", f"{role}_password_env",
                                 f"{role}_password") if k in table.data)
        table.fail(given, f"needs {role}_user (whose password it is)")
    return secret
