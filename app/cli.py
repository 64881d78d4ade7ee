"""``tako serve [--config FILE] [--host H] [--port P] [--workers N]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import uvicorn

from tako.app.config import load_settings


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        os.environ["TAKO_CONFIG"] = os.path.abspath(args.config)
    try:
        settings = load_settings()
    except Exception as exc:  # noqa: BLE001 - a config error is reported, not raised
        print(f"tako: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"ok: {len(settings.deployments)} deployments, {len(settings.profiles)} profiles")
        return 0
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
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
