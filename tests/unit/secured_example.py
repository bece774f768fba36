"""deploy/examples/sfops-secured.toml made loadable in a test: every file it names is stood in
for by a temporary one (sfops checks at load that each exists), ``real`` maps a path in the
example to a real file to use instead (e.g. a CA the test made)."""

from __future__ import annotations

import re
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "sfops-secured.toml"
FILE_KEYS = ("password_file", "sslrootcert", "sslcert", "sslkey", "sslpassword_file",
             "servicefile", "passfile", "known_hosts", "client_keys", "sasl_password_file",
             "ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
             "ssl_key_password_file")


def loadable(text: str, tmp_path: Path, real: dict[str, Path] | None = None) -> str:
    real = real or {}

    def stand_in(match: re.Match[str]) -> str:
        if match[2] in real:
            return f'{match[1]}"{real[match[2]]}"'
        path = tmp_path / Path(match[2]).name
        path.write_text("stand-in\n")
        path.chmod(0o600)
        return f'{match[1]}"{path}"'

    pattern = r'(?m)^((?:' + "|".join(FILE_KEYS) + r')\s*=\s*\[?)"(/[^"]+)"'
    return re.sub(pattern, stand_in, text)
