"""The ``gatekeeper`` command: ``demo``, ``serve``, ``worker``, ``tenant-key``, ``migrate``.

Each sub-command is registered by the module that owns it; this file only parses arguments and
dispatches, so that importing the CLI stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatekeeper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run everything on this machine with embedded defaults")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument(
        "--envoy",
        action="store_true",
        help="also Envoy on :10000 in front of the backends, Gatekeeper deciding over gRPC",
    )
    demo.add_argument("--envoy-port", type=int, default=10000, help="Envoy's port (--envoy)")
    demo.add_argument("--grpc-port", type=int, default=8081, help="the gRPC port (--envoy)")
    serve = sub.add_parser("serve", help="run one replica from a YAML configuration file")
    serve.add_argument("--config", help="the gatekeeper.yaml (default: GATEKEEPER_CONFIG_FILE)")
    serve.add_argument("--host", help="listen address (default: the file's listener.host)")
    serve.add_argument("--port", type=int, help="listen port (default: the file's listener.port)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes serving the port (default: GATEKEEPER_WORKERS, else one per core when "
        "GATEKEEPER_REDIS_URL is set, else 1)",
    )
    serve.add_argument("--check", action="store_true", help="only validate the file and exit")
    serve.add_argument(
        "--bare",
        action="store_true",
        help="data plane only: the gateway and its built-in endpoints, no other components",
    )
    sub.add_parser("worker", help="run the waiting room's admission worker (needs Redis)")
    sub.add_parser(
        "tenant-key",
        help="print a new waiting-room tenant secret key (for GATEKEEPER_BUSINESS_IDS=id=key)",
    )
    migrate = sub.add_parser("migrate", help="upgrade (or --downgrade) the SQL schema")
    migrate.add_argument("--url", help="database URL (default: GATEKEEPER_DATABASE_URL)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", action="store_true", help="go down to --revision")
    migrate.add_argument("--check", action="store_true", help="only check the schema is at head")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from gatekeeper.demo import run_demo

        return run_demo(
            host=args.host,
            port=args.port,
            envoy=args.envoy,
            envoy_port=args.envoy_port,
            grpc_port=args.grpc_port,
        )
    if args.command == "serve":
        from gatekeeper.demo import run_serve

        return run_serve(
            args.config,
            host=args.host,
            port=args.port,
            check=args.check,
            bare=args.bare,
            workers=args.workers,
        )
    if args.command == "worker":
        from gatekeeper.waitingroom.worker import main as run_worker

        return run_worker([])
    if args.command == "tenant-key":
        from gatekeeper.waitingroom.tenants import new_secret

        print(new_secret())
        return 0
    if args.command == "migrate":
        from gatekeeper.persistence.migrate import run as run_migrate

        return run_migrate(args)
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
