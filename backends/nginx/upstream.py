"""Read and edit one ``upstream NAME { ... }`` block of an nginx configuration file.

Why not crossplane (the Python nginx parser): it has had no release since 2022, and it parses
into a tree that it then re-serialises — which loses comments' exact placement, spacing and
quoting. Drain/undrain must change *one* token on *one* line and keep every other byte of the
file identical, so this module tokenizes with byte offsets and edits the text in place. It only
understands what an upstream block needs: words, quoted strings, ``{``, ``}``, ``;`` and
``#`` comments.

Text is decoded with ``surrogateescape`` so that any byte sequence (even invalid UTF-8 in a
comment) survives decode → edit → encode unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ENCODING = "utf-8"
ERRORS = "surrogateescape"


class UpstreamError(ValueError):
    """The file has no such upstream, the member is absent or ambiguous, or it is malformed."""


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "{" | "}" | ";"
    text: str  # for quoted strings: the unquoted value
    start: int  # offset of the first character (the quote for a quoted string)
    end: int  # offset just past the last character


def tokenize(text: str) -> Iterator[Token]:
    """nginx's lexical rules, enough for upstream blocks: whitespace separates, ``#`` starts a
    comment to end of line, quotes group (with backslash escapes), ``{ } ;`` stand alone."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif ch in "{};":
            yield Token(ch, ch, i, i + 1)
            i += 1
        elif ch in "\"'":
            start, i = i, i + 1
            value: list[str] = []
            while i < n and text[i] != ch:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                raise UpstreamError(f"unterminated quoted string at offset {start}")
            yield Token("word", "".join(value), start, i + 1)
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in "{};\"'":
                # nginx allows ${var} inside words; keep the braces as part of the word.
                if text[i] == "$" and i + 1 < n and text[i + 1] == "{":
                    close = text.find("}", i)
                    i = n if close < 0 else close + 1
                    continue
                i += 1
            yield Token("word", text[start:i], start, i)


@dataclass(frozen=True)
class ServerEntry:
    """One ``server ADDRESS [params];`` line of the upstream, as configured."""

    address: str
    weight: int = 1
    max_fails: int = 1
    fail_timeout: str = "10s"
    backup: bool = False
    down: bool = False
    other_params: tuple[str, ...] = ()  # parameters we don't interpret (e.g. max_conns=)
    start: int = 0  # offset of the `server` token
    end: int = 0  # offset just past its `;`
    down_token: tuple[int, int] | None = None  # span of the `down` parameter, when present
    last_arg_end: int = 0  # where ` down` is inserted
    line: int = 1  # 1-based line number, for messages


@dataclass(frozen=True)
class Upstream:
    name: str
    servers: tuple[ServerEntry, ...]
    directives: tuple[tuple[str, ...], ...]  # the other directives (least_conn, zone, ...)
    start: int
    end: int

    def find(self, address: str) -> ServerEntry:
        """The single server line for ``address``; raises when absent or duplicated."""
        matches = [s for s in self.servers if s.address == address]
        if not matches:
            raise UpstreamError(f'upstream {self.name}: no "server {address}" line')
        if len(matches) > 1:
            lines = ", ".join(str(s.line) for s in matches)
            raise UpstreamError(
                f"upstream {self.name}: {address} appears on several lines ({lines})"
            )
        return matches[0]


def _server_entry(words: Sequence[Token], end: int, text: str) -> ServerEntry:
    if len(words) < 2:
        raise UpstreamError(f"line {_line(text, words[0].start)}: server without an address")
    fields: dict[str, object] = {}
    other: list[str] = []
    down_token: tuple[int, int] | None = None
    for token in words[2:]:
        key, sep, value = token.text.partition("=")
        try:
            if sep and key == "weight":
                fields["weight"] = int(value)
            elif sep and key == "max_fails":
                fields["max_fails"] = int(value)
            elif sep and key == "fail_timeout":
                fields["fail_timeout"] = value
            elif token.text == "backup":
                fields["backup"] = True
            elif token.text == "down":
                fields["down"] = True
                down_token = (token.start, token.end)
            else:
                other.append(token.text)
        except ValueError:
            line = _line(text, token.start)
            raise UpstreamError(f"line {line}: bad server parameter {token.text!r}") from None
    return ServerEntry(
        address=words[1].text,
        weight=int(fields.get("weight", 1)),  # type: ignore[call-overload]
        max_fails=int(fields.get("max_fails", 1)),  # type: ignore[call-overload]
        fail_timeout=str(fields.get("fail_timeout", "10s")),
        backup=bool(fields.get("backup", False)),
        down=bool(fields.get("down", False)),
        other_params=tuple(other),
        start=words[0].start,
        end=end,
        down_token=down_token,
        last_arg_end=words[-1].end,
        line=_line(text, words[0].start),
    )


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def parse_upstream(text: str, name: str) -> Upstream:
    """Find ``upstream <name> { ... }`` (at any nesting depth: the file may be a whole
    nginx.conf or an included fragment) and read its directives."""
    tokens = list(tokenize(text))
    statement_start = True
    for index, token in enumerate(tokens):
        if (
            statement_start
            and token.kind == "word"
            and token.text == "upstream"
            and index + 2 < len(tokens)
            and tokens[index + 1].kind == "word"
            and tokens[index + 1].text == name
            and tokens[index + 2].kind == "{"
        ):
            return _read_block(text, name, tokens, index + 3, token.start)
        statement_start = token.kind in "{};"
    raise UpstreamError(f"no upstream {name!r} block")


def _read_block(text: str, name: str, tokens: list[Token], first: int, start: int) -> Upstream:
    servers: list[ServerEntry] = []
    directives: list[tuple[str, ...]] = []
    words: list[Token] = []
    for token in tokens[first:]:
        if token.kind == "word":
            words.append(token)
        elif token.kind == ";":
            if not words:
                continue  # a stray `;` is legal and means nothing
            if words[0].text == "server":
                servers.append(_server_entry(words, token.end, text))
            else:
                directives.append(tuple(w.text for w in words))
            words = []
        elif token.kind == "}":
            if words:
                raise UpstreamError(f"line {_line(text, words[0].start)}: missing ';'")
            return Upstream(name, tuple(servers), tuple(directives), start, token.end)
        else:  # "{" — upstream blocks have no nested blocks
            raise UpstreamError(f"line {_line(text, token.start)}: unexpected '{{' in upstream")
    raise UpstreamError(f"upstream {name}: missing closing '}}'")


def set_down(text: str, name: str, address: str, down: bool) -> str:
    """``text`` with the ``down`` parameter added to / removed from exactly the server line of
    ``address``; every other character unchanged. Returns ``text`` itself when nothing changes.

    Adding appends `` down`` right after the last parameter; removing deletes the token and the
    whitespace before it — so drain followed by undrain gives back the original bytes."""
    server = parse_upstream(text, name).find(address)
    if server.down == down:
        return text
    if down:
        at = server.last_arg_end
        return f"{text[:at]} down{text[at:]}"
    assert server.down_token is not None
    start, end = server.down_token
    while start > server.start and text[start - 1] in " \t":
        start -= 1
    return text[:start] + text[end:]


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


def set_down_bytes(data: bytes, name: str, address: str, down: bool) -> bytes:
    return encode(set_down(decode(data), name, address, down))
