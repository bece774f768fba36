"""``python -m deploy.api --host 127.0.0.1 --port 8000`` (everything else from SFAPI_* env)."""

from __future__ import annotations

import argparse
import logging
import math
import sys

import uvicorn

from deploy.api.app import Lifecycle, create_app
from deploy.api.server import DrainingServer
from deploy.api.settings import Settings, SettingsError

# nginx keeps idle upstream connections for 60 s (keepalive_timeout); the API must keep them
# longer, or nginx could reuse a connection the API has just closed and fail a request.
KEEP_ALIVE_SECONDS = 75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The pool logs every getconn at INFO.
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"streamforge-api: {exc}", file=sys.stderr)
        return 2

    lifecycle = Lifecycle()
    app = create_app(settings, lifecycle=lifecycle)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
        log_level=args.log_level,
        server_header=False,
    )
    DrainingServer(config, lifecycle, settings.drain_delay).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
