"""The worst-case durations the PostgreSQL actions state in their preflight, added up from the
timeouts their steps really use: a member's status read and one statement (the configured
``connect_timeout`` and ``statement_timeout``, the longer ones pg_promote and CHECKPOINT
get), and each host command's bound through the member's executor
(:func:`backends.executors.run_bound`: its deadline, then stopping it on the host).

MemberHost's per-command timeouts are literals in ``host.py``; :data:`HOST_TIMEOUTS` repeats
them and ``tests/unit/test_pg_worst_case.py`` checks the two agree.
"""

from __future__ import annotations

import inspect
from typing import Any

from backends.executors import run_bound
from backends.postgres.cluster import (
    PROMOTE_WAIT_SECONDS,
    STREAM_WAIT_SECONDS,
    ClusterOps,
    PgActionError,
    checkpoint_received,
)
from backends.postgres.connection import CONTACT_TIMEOUT
from backends.postgres.host import MemberHost

# MemberHost method → the timeout of each command it runs (stop and rewind: see below).
HOST_TIMEOUTS: dict[str, tuple[float, ...]] = {
    "reachable": (10.0,),
    "read_text": (15.0,),
    "write_text": (15.0,),
    "remove": (15.0,),
    "exists": (15.0,),
    "write_standby_signal": (15.0,),
    "remove_standby_signal": (15.0,),
    "running": (15.0,),
    "controldata": (15.0,),
    "start": (30.0,),
    "log_tail": (60.0,),
    "kill_server": (15.0,),  # one script: SIGSTOP, SIGKILL, wait KILL_WAIT_SECONDS (+10 s)
}
STOP_MARGIN = 10.0  # MemberHost.stop: pg_ctl stop -t T runs with a T + 10 s deadline
CHECKPOINT_STATEMENT_TIMEOUT = 120.0  # the CHECKPOINTs of a switchover and a rejoin
CRASH_RECOVERY_WAIT = 60.0  # a rejoin's crash recovery as a standby (cluster._stop_cleanly)
ABANDON = 1.0  # MemberConnection._bounded: two 0.5 s waits for an abandoned statement
CONFIG_FILES = 4  # pg_rewind's kept configuration files, read before and written after


def _default(fn: Any, parameter: str) -> float:
    return float(inspect.signature(fn).parameters[parameter].default)


STOP_TIMEOUT = _default(MemberHost.stop, "timeout")
REWIND_TIMEOUT = _default(MemberHost.rewind, "timeout")
CHECKPOINT_RECEIVED_WAIT = _default(checkpoint_received, "seconds")


def _settings(cluster: ClusterOps) -> tuple[float, float]:
    config = getattr(cluster, "pg", None)
    return (float(getattr(config, "connect_timeout", 3.0)),
            float(getattr(config, "statement_timeout", 5.0)))


def query(cluster: ClusterOps, statement_timeout: float | None = None) -> float:
    """One statement (MemberConnection.fetch's client-side budget, then the abandon)."""
    connect, statement = _settings(cluster)
    if statement_timeout is None:
        return connect + statement + 1.0 + ABANDON
    return connect + statement_timeout + 2.0 + ABANDON


def status_read(cluster: ClusterOps) -> float:
    """One member's status read (read_all reads every member at once: the same bound)."""
    connect, _ = _settings(cluster)
    return CONTACT_TIMEOUT + connect + ABANDON + 2 * query(cluster)


def _executor(cluster: ClusterOps, name: str) -> Any:
    """``name``'s executor (None when its host cannot be reached: the bare timeouts count)."""
    try:
        return getattr(cluster.host(name), "executor", None)
    except PgActionError:
        return None


def host(cluster: ClusterOps, name: str, *methods: str) -> float:
    """MemberHost ``methods`` on ``name``'s host, one after the other."""
    executor = _executor(cluster, name)
    return sum((run_bound(executor, timeout) for method in methods
                for timeout in HOST_TIMEOUTS[method]), 0.0)


def stop(cluster: ClusterOps, name: str, timeout: float = STOP_TIMEOUT) -> float:
    return (host(cluster, name, "running")
            + run_bound(_executor(cluster, name), timeout + STOP_MARGIN))


def rewind(cluster: ClusterOps, name: str) -> float:
    """The passfile, the TLS files and a passphrase's service file written, pg_rewind, one
    removal of them all (the source's settings: the most any member needs)."""
    writes = 1 + rewind_files(cluster)
    return (host(cluster, name, *(["write_text"] * writes), "remove")
            + run_bound(_executor(cluster, name), REWIND_TIMEOUT))


def rewind_files(cluster: ClusterOps) -> int:
    """The most files besides the passfile a pg_rewind source needs (CA, certificate, key,
    a passphrase's service file) among the members."""
    try:
        sources = [cluster.rewind_source(member) for member in cluster.members]
    except (AttributeError, PgActionError):  # a cluster (a test's) without TLS settings
        return 0
    return max((len(s.files) + (s.sslpassword is not None) for s in sources), default=0)


def promote(cluster: ClusterOps) -> float:
    """Read, resume replay, pg_promote (waiting up to PROMOTE_WAIT_SECONDS), read, test
    write."""
    return (2 * status_read(cluster) + 2 * query(cluster)
            + query(cluster, PROMOTE_WAIT_SECONDS + 5))


def fence_first(cluster: ClusterOps, name: str) -> float:
    """cluster.fence_first, before the promotion: standby.signal, the kill script, and on
    the kill's failure standby.signal removed again."""
    return host(cluster, name, "write_standby_signal", "kill_server", "remove_standby_signal")


def fence_after(cluster: ClusterOps, name: str) -> float:
    """cluster.fence, after the promotion, for a member whose host the preflight could not
    reach: reachable, then standby.signal and the kill script if it answers by then."""
    return host(cluster, name, "reachable", "write_standby_signal", "kill_server")


def rejoin(cluster: ClusterOps, name: str) -> float:
    """The longer way (pg_rewind, crash recovery first), up to streaming or its failure."""
    stop_cleanly = (stop(cluster, name) + host(cluster, name, "controldata")
                    + host(cluster, name, "start") + CRASH_RECOVERY_WAIT + query(cluster)
                    + host(cluster, name, "running") + stop(cluster, name)
                    + host(cluster, name, "controldata", "log_tail"))
    checkpoint = 2 * query(cluster) + query(cluster, CHECKPOINT_STATEMENT_TIMEOUT)
    files = host(cluster, name, *(["read_text"] * CONFIG_FILES + ["write_text"] * CONFIG_FILES))
    return (status_read(cluster) + host(cluster, name, "read_text", "exists",
                                        "write_standby_signal")
            + stop_cleanly + checkpoint + files + rewind(cluster, name)
            + 3 * query(cluster)  # the slot: read, drop, create
            + host(cluster, name, "read_text", "write_text", "write_standby_signal", "start")
            + STREAM_WAIT_SECONDS + status_read(cluster)
            + host(cluster, name, "running", "log_tail"))


def switchover_stop(cluster: ClusterOps, name: str) -> float:
    """CHECKPOINT, fast stop, standby.signal, the control file, the standby receiving the
    shutdown checkpoint (or the way back: standby.signal removed, started again)."""
    return (query(cluster, CHECKPOINT_STATEMENT_TIMEOUT) + stop(cluster, name)
            + host(cluster, name, "write_standby_signal", "controldata")
            + CHECKPOINT_RECEIVED_WAIT + query(cluster))
