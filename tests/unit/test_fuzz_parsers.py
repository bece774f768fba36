"""Fuzzing (hypothesis) of the parsers that read outside text: the configuration loader
(TOML → :class:`ConfigError`, never another exception), nginx's upstream file
(→ :class:`UpstreamError`) and its JSON access log (a bad line is skipped, never raised).

Bounded so `make test` spends seconds here: ``max_examples`` per test; no deadline, since
timing is never asserted. Locally each run explores new inputs; under CI (``CI`` set) the
examples are derandomized, so a build never fails on a new random find — fuzz locally, and
turn every crash into a named regression test below (``test_regression_*``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends.config import ConfigError, SfopsConfig, load, parse
from backends.nginx.accesslog import (
    FileState,
    LogTail,
    TrafficWindow,
    parse_line,
    parse_stat,
)
from backends.nginx.upstream import UpstreamError, decode, encode, parse_upstream, set_down

FUZZ = settings(
    max_examples=int(os.environ.get("SFOPS_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
CONFIG_PATH = Path("/nonexistent-sfops-fuzz/sfops.toml")

# Strings with a history of breaking things: NUL, home-directory forms, huge digit runs,
# control and bidi characters, empty and blank values, paths that exist but are directories.
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "~", "~nosuchuser-sfops/x", "~/x", "/", ".", "..",
    "host:" + "9" * 5000, "h:0", "h:65536", "[::1]:80", "[zz]:80", ":80", "h:", "h:٣",
    "http://", "http://h", "https://h/x", "\x1b]0;title\x07", "\u202e", "\ud7ff", "\ufeff",
    "a,b", ",", "-", "inf", "nan", "1e999", "0x10",
]


def text_values() -> st.SearchStrategy[str]:
    # TOML strings hold any Unicode scalar value: no surrogates.
    return st.one_of(
        st.sampled_from(NASTY_STRINGS),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    )


def toml_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        text_values(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.datetimes(),
        st.dates(),
        st.times(),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(text_values(), children, max_size=4),
        ),
        max_leaves=8,
    )


def base_config(password_file: str) -> dict[str, Any]:
    """A complete, valid configuration: every section and key the loader knows."""
    return {
        "sfops": {"refresh_interval": 1.5, "audit_log": "/abs/audit.jsonl",
                  "state_dir": "state", "read_only": True},
        "executors": {
            "local": {"type": "local"},
            "lab-ssh": {"type": "ssh", "host": "127.0.0.1", "port": 15420, "user": "u",
                        "client_keys": ["/abs/id"], "known_hosts": "/abs/kh",
                        "connect_timeout": 5.0},
        },
        "nginx": {
            "executor": "lab-ssh", "nginx_binary": "/usr/sbin/nginx", "prefix": "/abs/nginx",
            "config_file": "/abs/nginx.conf", "pid_file": "/abs/nginx.pid",
            "upstream_name": "api_backend", "upstream_file": "/abs/upstream.conf",
            "access_log": "/abs/access.json", "stub_status_url": "http://127.0.0.1:1/s",
            "url": "http://127.0.0.1:1",
            "members": {"api-1": {"address": "127.0.0.1:15401",
                                  "health_url": "http://127.0.0.1:15401/health/ready"}},
        },
        "postgres": {
            "dbname": "streamforge", "user": "sfops", "password_file": password_file,
            "connect_timeout": 3.0, "statement_timeout": 5.0, "max_lag_on_failover": 1048576,
            "members": {"pg-1": {"host": "127.0.0.1", "port": 15410, "executor": "local",
                                 "data_dir": "/abs/data", "bin_dir": "/abs/bin",
                                 "os_user": "postgres"}},
        },
        "kafka": {"bootstrap_servers": "127.0.0.1:15430", "consumer_groups": ["g"],
                  "request_timeout": 5.0, "max_not_preferred_leaders": 0,
                  "max_leader_skew": 0},
        "kubernetes": {"kubeconfig": "/abs/kubeconfig", "context": "c",
                       "namespaces": ["streamforge"], "readonly_kubeconfig": "/abs/ro",
                       "operator_kubeconfig": "/abs/op", "lease_namespace": "streamforge"},
    }


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    return found


KEY_PATHS = _paths(base_config("/pw"))
# Keys that exist somewhere in the schema, to add in the wrong place or as a second source.
KNOWN_KEYS = sorted({p[-1] for p in KEY_PATHS} | {"password", "password_env", "type"})


@st.composite
def mutated_configs(draw: st.DrawFn, password_file: str) -> dict[str, Any]:
    doc = base_config(password_file)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(KEY_PATHS))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(toml_values())
        elif action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.sampled_from(KNOWN_KEYS) | text_values())] = draw(toml_values())
    return doc


def assert_loads_or_config_error(text: str) -> None:
    try:
        config = parse(text, CONFIG_PATH)
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError must say what is wrong"
    else:
        assert isinstance(config, SfopsConfig)


# -- the configuration loader --------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=300))
def test_fuzz_config_text(text: str) -> None:
    assert_loads_or_config_error(text)


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pw") / "pg-sfops"
    path.write_text("s3cret\n")
    return path


@FUZZ
@given(st.data())
def test_fuzz_config_structure(password_file: Path, data: st.DataObject) -> None:
    doc = data.draw(mutated_configs(str(password_file)))
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # e.g. a key tomli_w cannot write: not a config file
        return
    assert_loads_or_config_error(text)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cfg") / "sfops.toml"


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_config_file_bytes(config_file: Path, data: bytes) -> None:
    path = config_file
    path.write_bytes(data)
    try:
        load(path)
    except ConfigError as exc:
        assert str(exc).strip()


# -- nginx upstream file -------------------------------------------------------------------------
UPSTREAM_WORDS = [
    "upstream", "api_backend", "other", "server", "127.0.0.1:1", "127.0.0.1:2", "down",
    "backup", "weight=2", "weight=x", "weight=" + "9" * 5000, "max_fails=3", "max_fails=",
    "fail_timeout=10s", "max_conns=5", "least_conn", "zone", "keepalive", "{", "}", ";", " ",
    "\n", "\t", "#", "# comment\n", '"', "'", '"a b"', "'c;d'", "\\", "${x}", "${", "$", "=",
    "\x00", "\udcff", "ü",
]


@st.composite
def upstream_texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(UPSTREAM_WORDS) | st.text(max_size=6), max_size=40))
    return " ".join(words)


def _upstream_or_error(text: str, name: str) -> None:
    try:
        upstream = parse_upstream(text, name)
    except UpstreamError as exc:
        assert str(exc)
        return
    for server in upstream.servers:
        # Drain then undrain gives back the original bytes (the drain action relies on it).
        try:
            drained = set_down(text, name, server.address, True)
        except UpstreamError:
            continue  # the address is on several lines: refused, never guessed
        if not server.down:
            assert set_down(drained, name, server.address, False) == text


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["api_backend", "other", ""]))
def test_fuzz_upstream_bytes(data: bytes, name: str) -> None:
    assert encode(decode(data)) == data, "decode/encode keeps every byte"
    _upstream_or_error(decode(data), name)


@FUZZ
@given(upstream_texts(), st.sampled_from(["api_backend", "other"]))
@example("upstream api_backend { server 127.0.0.1:1 weight=" + "9" * 5000 + "; }", "api_backend")
def test_fuzz_upstream_tokens(text: str, name: str) -> None:
    _upstream_or_error(text, name)


@FUZZ
@given(upstream_texts())
def test_fuzz_upstream_inside_a_valid_block(body: str) -> None:
    text = f"upstream api_backend {{\n    server 127.0.0.1:1 max_fails=3;\n{body}\n}}\n"
    _upstream_or_error(text, "api_backend")


# -- nginx access log ----------------------------------------------------------------------------
NUMBERS_AS_TEXT = ["0.001", "1717000000.123", "-", "", "inf", "-inf", "nan", "1e999", "1e-999",
                   "502", "502, 200", "502 : 200", "x", "9" * 400, "0x1f", "  1  "]


def log_field_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(NUMBERS_AS_TEXT),
        st.text(max_size=20),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


@st.composite
def log_lines(draw: st.DrawFn) -> str:
    record = {
        "msec": draw(log_field_values()),
        "request_time": draw(log_field_values()),
        "upstream_addr": draw(st.sampled_from(["127.0.0.1:1", "127.0.0.1:1, 127.0.0.1:2",
                                               "a : b", "-", ""]) | log_field_values()),
        "upstream_status": draw(log_field_values()),
        "upstream_response_time": draw(log_field_values()),
    }
    drop = draw(st.sets(st.sampled_from(list(record))))
    return json.dumps({k: v for k, v in record.items() if k not in drop})


def _check_attempts(line: str) -> None:
    attempts = parse_line(line)
    window = TrafficWindow(clock=lambda: 1717000000.0)
    window.add(attempts)
    for address, traffic in window.stats().items():
        assert isinstance(address, str)
        assert traffic.requests >= 0
    for attempt in attempts:
        assert attempt.address and attempt.address != "-"
        assert attempt.status is None or isinstance(attempt.status, int)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_access_log_text(line: str) -> None:
    _check_attempts(line)


@FUZZ
@given(log_lines())
@example('{"msec": "1717000000.1", "upstream_addr": "a", "upstream_status": "inf"}')
@example('{"msec": "1717000000.1", "upstream_addr": "a", "upstream_status": "nan"}')
@example("[" * 100_000)
def test_fuzz_access_log_records(line: str) -> None:
    _check_attempts(line)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_fuzz_log_tail_chunking_does_not_change_the_lines(data: bytes, cuts: list[int]) -> None:
    """However the bytes arrive (any split into reads), the same complete lines come out."""
    whole = LogTail()
    whole.plan(FileState(1, 0))
    expected = whole.feed(data)
    tail = LogTail()
    tail.plan(FileState(1, 0))
    got: list[str] = []
    previous = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        got.extend(tail.feed(data[previous:cut]))
        previous = cut
    assert got == expected
    assert tail.offset == len(data)


@FUZZ
@given(st.text(max_size=60))
@example("")
@example("12 x")
@example("1 2 3")
def test_fuzz_parse_stat(output: str) -> None:
    try:
        state = parse_stat(output)
    except ValueError as exc:
        assert "stat" in str(exc), f"unclear error: {exc}"
    else:
        assert state.inode >= 0 and state.size >= 0


# -- regressions: every crash the fuzzing found, by name ----------------------------------------
def test_regression_config_path_naming_an_unknown_users_home() -> None:
    """``~nosuchuser/x`` made Path.expanduser() raise RuntimeError out of the loader."""
    for key in ("audit_log = ", "state_dir = "):
        with pytest.raises(ConfigError, match=r"sfops\.(audit_log|state_dir)"):
            parse(f'[sfops]\n{key}"~nosuchuser-sfops/x"\n', CONFIG_PATH)


def test_regression_config_path_with_a_nul_byte() -> None:
    """A NUL in a path made reading it (password_file) raise ValueError."""
    text = tomli_w.dumps({**base_config("/abs/pw\x00x")})
    with pytest.raises(ConfigError, match=r"postgres\.password_file"):
        parse(text, CONFIG_PATH)


def test_regression_config_host_port_with_too_many_digits() -> None:
    """A 5000-digit port made int() raise ValueError (CPython's int-string limit)."""
    doc = base_config("/abs/pw")
    doc["nginx"]["members"]["api-1"]["address"] = "h:" + "9" * 5000
    doc["kafka"]["bootstrap_servers"] = "h:" + "9" * 5000
    with pytest.raises(ConfigError, match=r"address.*expected \"host:port\""):
        parse(tomli_w.dumps(doc), CONFIG_PATH)


def test_regression_access_log_status_inf_or_nan() -> None:
    """``"upstream_status": "inf"`` made int() raise OverflowError (``nan``: ValueError)."""
    for status in ("inf", "-inf", "nan", "1e999"):
        line = json.dumps({"msec": "1717000000.1", "upstream_addr": "a",
                           "upstream_status": status})
        assert [a.status for a in parse_line(line)] == [None]


def test_regression_access_log_nesting_deeper_than_the_json_parser() -> None:
    """A line of 100,000 ``[`` made json.loads raise RecursionError (not a ValueError)."""
    assert parse_line("[" * 100_000) == []


def test_regression_access_log_non_finite_times_are_unknown() -> None:
    line = json.dumps({"msec": "nan", "upstream_addr": "a", "request_time": "inf"})
    assert parse_line(line) == []
    line = json.dumps({"msec": "1717000000.1", "upstream_addr": "a",
                       "upstream_response_time": "inf", "request_time": "nan"})
    [attempt] = parse_line(line)
    assert attempt.response_time is None and attempt.started == attempt.at
    assert not math.isnan(attempt.at)


def test_regression_stat_output_that_is_not_two_numbers() -> None:
    for output in ("", "12 x", "1 2 3", "garbage"):
        with pytest.raises(ValueError, match="stat"):
            parse_stat(output)
