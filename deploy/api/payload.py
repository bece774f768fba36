"""Reading and validating request bodies before anything reaches the database.

Bad input is the client's fault, so it gets a 4xx here and never touches the pool or the
circuit breaker: it is neither a success (which would close a half-open breaker on garbage)
nor a failure (which would open the breaker on a client's typo).

The rules are those of PostgreSQL's ``jsonb`` plus a few bounds, checked up front instead of
letting the INSERT fail:

- the body is at most ``max_body_bytes`` (413), read incrementally so a huge or endless
  chunked body is cut off at the limit instead of being buffered;
- it is JSON (400): UTF-8, no ``NaN``/``Infinity`` (not JSON, and jsonb refuses them);
- the payload is a JSON object (422), nested at most :data:`MAX_DEPTH` levels;
- no string or key holds ``\\u0000`` (jsonb cannot store it) or a lone surrogate
  (``"\\ud800"`` parses in Python but cannot be encoded to UTF-8);
- every number is finite (``1e999`` parses as infinity).

Why not a schema library: these are jsonb's storage limits, not a document shape; a walk over
the parsed value says them directly.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from starlette.requests import Request

MAX_DEPTH = 32


class InvalidInput(ValueError):
    """The request is refused with ``status``; ``message`` is safe to send to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or InvalidInput(413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidInput(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InvalidInput(413, f"body larger than {limit} bytes")
    return bytes(body)


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def parse_event_payload(body: bytes) -> dict[str, Any]:
    """The payload of ``POST /events``: a JSON object that jsonb can store."""
    try:
        payload = json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidInput(400, "body must be JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise InvalidInput(422, "payload must be a JSON object")
    check_storable(payload)
    return payload


def check_storable(payload: Any) -> None:
    """Raise InvalidInput(422) unless jsonb can store ``payload`` (iterative: no recursion)."""
    pending: list[tuple[Any, int]] = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise InvalidInput(422, f"payload nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                _check_text(key)
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise InvalidInput(422, f"payload nested deeper than {MAX_DEPTH} levels")
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(422, "numbers must be finite")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidInput(422, "strings must not contain NUL (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(422, "strings must be valid Unicode (no lone surrogates)") from None
