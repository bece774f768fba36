"""The upstream tokenizer and the byte-exact down edit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backends.nginx.upstream import (
    UpstreamError,
    decode,
    encode,
    parse_upstream,
    set_down,
    set_down_bytes,
    tokenize,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY_UPSTREAM = (REPO / "deploy/nginx/conf.d/upstream.conf").read_bytes()

TRICKY = """\
# a comment with upstream api_backend { inside it }
http {
  upstream other { server 10.0.0.1:80; }
  upstream   api_backend {   # trailing comment; with ; and { }
      least_conn ;
      server 10.0.0.1:8000 weight=5 max_fails=2 fail_timeout=30s;
      server "10.0.0.2:8000"	backup ;
      server 10.0.0.3:8000 down max_conns=10;
      server 10.0.0.4:8000
          max_fails=3;  # multi-line
      keepalive 16;
  }
}
"""


def test_parses_the_deploy_upstream() -> None:
    upstream = parse_upstream(decode(DEPLOY_UPSTREAM), "api_backend")
    assert [s.address for s in upstream.servers] == ["api1:8000", "api2:8000", "api3:8000"]
    first = upstream.servers[0]
    assert (first.weight, first.max_fails, first.fail_timeout, first.backup, first.down) == (
        1, 3, "10s", False, False)
    assert ("least_conn",) in upstream.directives
    assert ("keepalive", "32") in upstream.directives


def test_parses_parameters_quotes_comments_and_nesting() -> None:
    upstream = parse_upstream(TRICKY, "api_backend")
    by_address = {s.address: s for s in upstream.servers}
    assert set(by_address) == {"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000",
                               "10.0.0.4:8000"}
    assert by_address["10.0.0.1:8000"].weight == 5
    assert by_address["10.0.0.1:8000"].fail_timeout == "30s"
    assert by_address["10.0.0.2:8000"].backup
    assert by_address["10.0.0.3:8000"].down
    assert by_address["10.0.0.3:8000"].other_params == ("max_conns=10",)
    assert by_address["10.0.0.4:8000"].max_fails == 3
    assert by_address["10.0.0.4:8000"].line == 9
    # the other upstream is not confused with ours
    assert [s.address for s in parse_upstream(TRICKY, "other").servers] == ["10.0.0.1:80"]


@pytest.mark.parametrize("address", ["api1:8000", "api2:8000", "api3:8000"])
def test_drain_then_undrain_is_byte_identical(address: str) -> None:
    drained = set_down_bytes(DEPLOY_UPSTREAM, "api_backend", address, True)
    assert drained != DEPLOY_UPSTREAM
    # exactly one line changed, by exactly " down" before its ';'
    before, after = DEPLOY_UPSTREAM.splitlines(), drained.splitlines()
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert len(changed) == 1
    assert changed[0][1] == changed[0][0].replace(b"10s;", b"10s down;")
    assert parse_upstream(decode(drained), "api_backend").find(address).down
    assert set_down_bytes(drained, "api_backend", address, False) == DEPLOY_UPSTREAM


def test_undrain_removes_a_down_in_the_middle_keeping_the_rest() -> None:
    text = set_down(TRICKY, "api_backend", "10.0.0.3:8000", False)
    assert "      server 10.0.0.3:8000 max_conns=10;\n" in text
    assert text.replace("      server 10.0.0.3:8000 max_conns=10;", "") == TRICKY.replace(
        "      server 10.0.0.3:8000 down max_conns=10;", "")


def test_drain_of_a_multiline_server_and_a_quoted_one() -> None:
    text = set_down(TRICKY, "api_backend", "10.0.0.4:8000", True)
    assert "          max_fails=3 down;  # multi-line" in text
    text = set_down(TRICKY, "api_backend", "10.0.0.2:8000", True)
    assert 'server "10.0.0.2:8000"\tbackup down ;' in text
    assert set_down(text, "api_backend", "10.0.0.2:8000", False) == TRICKY


def test_no_change_returns_the_same_text() -> None:
    assert set_down(TRICKY, "api_backend", "10.0.0.3:8000", True) is TRICKY
    assert set_down(TRICKY, "api_backend", "10.0.0.1:8000", False) is TRICKY


def test_invalid_utf8_survives_the_round_trip() -> None:
    data = b"# caf\xe9 \xff\n" + DEPLOY_UPSTREAM
    drained = set_down_bytes(data, "api_backend", "api2:8000", True)
    assert drained.startswith(b"# caf\xe9 \xff\n")
    assert set_down_bytes(drained, "api_backend", "api2:8000", False) == data
    assert encode(decode(data)) == data


def test_errors() -> None:
    with pytest.raises(UpstreamError, match="no upstream 'missing'"):
        parse_upstream(TRICKY, "missing")
    with pytest.raises(UpstreamError, match=re.escape("no \"server 10.9.9.9:1\"")):
        set_down(TRICKY, "api_backend", "10.9.9.9:1", True)
    duplicated = "upstream u { server a:1; server a:1 backup; }"
    with pytest.raises(UpstreamError, match="several lines"):
        set_down(duplicated, "u", "a:1", True)
    with pytest.raises(UpstreamError, match="missing closing"):
        parse_upstream("upstream u { server a:1;", "u")
    with pytest.raises(UpstreamError, match="unterminated"):
        list(tokenize('upstream u { server "a:1; }'))
    with pytest.raises(UpstreamError, match="missing ';'"):
        parse_upstream("upstream u { server a:1 }", "u")


def test_upstream_keyword_must_start_a_statement() -> None:
    # `proxy_pass upstream api_backend {` is nonsense, but "upstream" as an argument must not
    # be taken for the block.
    text = "set $x upstream; upstream api { server b:2; }"
    assert [s.address for s in parse_upstream(text, "api").servers] == ["b:2"]
