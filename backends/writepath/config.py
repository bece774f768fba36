"""``[verify]``: where and how long the write-path canary runs (docs/config-spec.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.config import Reader, check_url

DEFAULT_TIMEOUT = 15.0
MAX_TIMEOUT = 300.0


@dataclass(frozen=True)
class VerifySettings:
    url: str  # where users reach the API: nginx's listen, e.g. http://127.0.0.1:15400
    timeout: float = DEFAULT_TIMEOUT  # one canary run, every hop and every retry
    enabled: bool = True  # false: no canary, neither after actions nor `sfops verify`
    consumer: bool = True  # wait for a consumer to record the canary (false: none does)


def parse_section(root: Reader, sections: Mapping[str, Any]) -> VerifySettings | None:
    """``[verify]`` or None when absent. ``url`` defaults to ``[nginx] url``."""
    table = root.table("verify")
    if table is None:
        return None
    url = table.string("url", None)
    check_url(table, "url", url)
    if url is None:
        url = getattr(sections.get("nginx"), "url", None)
        if url is None:
            table.fail("url", "required key is missing (expected the URL users write "
                       "through: nginx's listen, e.g. \"http://127.0.0.1:15400\"; or set "
                       "[nginx] url)")
    timeout = table.number("timeout", DEFAULT_TIMEOUT)
    if timeout > MAX_TIMEOUT:
        table.fail("timeout", f"must be at most {MAX_TIMEOUT:g} seconds, got {timeout:g}")
    settings = VerifySettings(url=url or "", timeout=timeout,
                              enabled=table.boolean("enabled", True),
                              consumer=table.boolean("consumer", True))
    table.finish()
    return settings
