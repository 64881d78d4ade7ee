"""``tako serve [--config FILE] [--host H] [--port P] [--workers N]``, ``tako check``,
``tako train-router --tasks FILE --out HEAD.npz`` (``app.train_router``).

Both build the gateway from the config the same way (``load_settings`` then
``Gateway.from_settings``); a config that cannot run makes either print every problem,
one line each with its path, and exit with status 2. ``serve`` checks before it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import tempfile
from typing import cast

import uvicorn

from tako.app import train_router
from tako.app.config import Settings, load_settings
from tako.app.gateway import Gateway
from tako.app.http_protocol import ClientLimits, LimitedHttpToolsProtocol
from tako.core.errors import ConfigError

CONFIG_ERROR_EXIT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tako", description="tako LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $TAKO_CONFIG, "
                                        "else the embedded default)")
    serve.add_argument("--host", help="listen address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default from config: 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--log-level", default=os.environ.get("TAKO_LOG_LEVEL", "info"))
    check = sub.add_parser("check", help="validate the config and exit")
    check.add_argument("--config", help="YAML config file (default: $TAKO_CONFIG)")
    train_router.add_parser(sub)
    return parser


def checked_settings() -> Settings:
    """The settings, once the gateway built from them (and closed); raises ConfigError."""
    settings = load_settings()
    gateway = Gateway.from_settings(settings)
    asyncio.run(gateway.aclose())
    return settings


def report(error: ConfigError) -> int:
    source = os.environ.get("TAKO_CONFIG") or "the embedded default config"
    count = len(error.problems)
    print(f"tako: invalid configuration {source}: {count} problem{'s' * (count != 1)}",
          file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return CONFIG_ERROR_EXIT


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        os.environ["TAKO_CONFIG"] = os.path.abspath(args.config)
    try:
        settings = checked_settings()
    except ConfigError as error:
        return report(error)
    if args.command == "check":
        print(f"ok: {len(settings.deployments)} deployments, {len(settings.profiles)} profiles")
        return 0
    if args.command == "train-router":
        return train_router.run(args, Gateway.from_settings(settings))
    try:
        return _serve(args, settings)
    except ConfigError as error:  # the workers' own build, from the same environment
        return report(error)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    workers = args.workers or settings.server.workers
    # Workers rebuild the settings from the environment: pass the CLI overrides along.
    os.environ["TAKO_SERVER__HOST"] = host
    os.environ["TAKO_SERVER__PORT"] = str(port)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tako-prom-")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        "tako.app.factory:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,  # client addresses are not used; skip the header rewrite
        timeout_graceful_shutdown=int(settings.server.graceful_shutdown_s),
        lifespan="on",
        # uvicorn calls it like a protocol class (a partial pickles for worker processes)
        http=cast("type[asyncio.Protocol]", functools.partial(
            LimitedHttpToolsProtocol, limits=client_limits(settings))),
    )
    return 0


def client_limits(settings: Settings) -> ClientLimits:
    server = settings.server
    return ClientLimits(header_timeout_s=server.header_timeout_s,
                        body_timeout_s=server.body_timeout_s,
                        max_header_bytes=server.max_header_bytes)


if __name__ == "__main__":
    raise SystemExit(main())
