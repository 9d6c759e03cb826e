"""`sami-control`: serve the API, and administer the data folder offline."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from pathlib import Path

from sami_common import logs
from sami_control import offline
from sami_control.core.controlplane import Settings
from sami_control.core.errors import DomainError
from sami_control.server import DEFAULT_LISTEN, ControlServer, ListenRefused, ServeConfig

DEFAULT_DATA = os.environ.get("SAMI_DATA", ".sami")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sami-control",
        description="The Sami control plane. With no command, `serve` on loopback with "
        f"data in ./{DEFAULT_DATA}.",
    )
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default %(default)s)")
    serve.add_argument("--data", default=DEFAULT_DATA, help="data folder (default %(default)s)")
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without TLS"
    )
    serve.add_argument(
        "--lease-ttl",
        type=float,
        default=Settings.lease_ttl,
        help="seconds an agent lease lives without renewal (default %(default)s)",
    )
    serve.add_argument(
        "--ack-timeout",
        type=float,
        default=Settings.ack_timeout,
        help="seconds an agent has to ack an assignment (default %(default)s)",
    )
    serve.add_argument("--heartbeat-interval", type=float, default=Settings.heartbeat_interval)
    serve.add_argument(
        "--restart-grace",
        type=float,
        default=Settings.restart_grace,
        help="seconds agents get to reconnect after a restart",
    )
    serve.add_argument("--max-attempts", type=int, default=Settings.max_attempts)

    tok = sub.add_parser("token", help="create, list and revoke tokens (offline)")
    tsub = tok.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token; it is printed once, last")
    create.add_argument("--data", default=DEFAULT_DATA)
    create.add_argument("--role", required=True, choices=["admin", "agent", "deployer", "reader"])
    create.add_argument("--name", default="", help="who or what uses it, e.g. ci-camerdevs")
    create.add_argument("--cluster", default="", help="agent tokens: the cluster it serves")
    create.add_argument(
        "--service",
        action="append",
        default=[],
        help="deployer tokens: a service it may deploy (repeatable)",
    )
    create.add_argument(
        "--environment",
        "--env",
        action="append",
        default=[],
        help="deployer tokens: an environment it may deploy to (repeatable)",
    )
    create.add_argument("--expires-in", default="", help="e.g. 90d, 12h (default: never)")
    tl = tsub.add_parser("list", help="list tokens (never their secrets)")
    tl.add_argument("--data", default=DEFAULT_DATA)
    tr = tsub.add_parser("revoke", help="revoke a token by id")
    tr.add_argument("token_id")
    tr.add_argument("--data", default=DEFAULT_DATA)

    cl = sub.add_parser("cluster", help="create clusters (offline)")
    csub = cl.add_subparsers(dest="cluster_command", required=True)
    cc = csub.add_parser("create", help="create a cluster serving environments")
    cc.add_argument("name")
    cc.add_argument(
        "--env",
        "--environment",
        dest="environments",
        action="append",
        default=[],
        required=True,
        help="stage, production or pull_request (repeatable)",
    )
    cc.add_argument("--data", default=DEFAULT_DATA)
    return p


def _serve(args: argparse.Namespace) -> int:
    settings = Settings(
        lease_ttl=args.lease_ttl,
        ack_timeout=args.ack_timeout,
        heartbeat_interval=args.heartbeat_interval,
        restart_grace=args.restart_grace,
        max_attempts=args.max_attempts,
    )
    cfg = ServeConfig(
        listen=args.listen, data_dir=Path(args.data), settings=settings, insecure=args.insecure
    )

    async def run() -> None:
        # The grpc.aio server binds to the running loop: build it inside it.
        await ControlServer(cfg).run_until_signalled()

    try:
        asyncio.run(run())
    except ListenRefused as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    return 0


def _when(t: float) -> str:
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    if args.command in (None, "serve"):
        if args.command is None:
            args = _parser().parse_args(["serve"])
        return _serve(args)
    data = Path(args.data)
    try:
        if args.command == "token" and args.token_command == "create":
            issued = offline.add_token(
                data,
                args.role,
                args.name,
                args.cluster,
                args.service,
                args.environment,
                args.expires_in,
            )
            r = issued.record
            scope = ""
            if r.role.value == "deployer":
                scope = (
                    f" services={','.join(r.services) or 'any'}"
                    f" environments={','.join(r.environments) or 'any'}"
                )
            elif r.cluster:
                scope = f" cluster={r.cluster}"
            print(
                f"created token {r.id} ({r.name}) role={r.role.value}{scope}; "
                "it is shown once, store it now:",
                file=sys.stderr,
            )
            print(issued.plaintext)
        elif args.command == "token" and args.token_command == "list":
            print(f"{'ID':<14}{'NAME':<24}{'ROLE':<10}{'SCOPE':<36}{'EXPIRES':<18}REVOKED")
            for t in offline.list_tokens(data):
                scope = t.cluster or ",".join(t.services + t.environments) or "-"
                print(
                    f"{t.id:<14}{t.name:<24}{t.role.value:<10}{scope:<36}"
                    f"{_when(t.expires_at):<18}{_when(t.revoked_at)}"
                )
        elif args.command == "token" and args.token_command == "revoke":
            offline.revoke_token(data, args.token_id)
            print(f"revoked token {args.token_id}")
        elif args.command == "cluster":
            c = offline.add_cluster(data, args.name, args.environments)
            print(f"created cluster {c.id} serving {', '.join(c.environments)}")
    except DomainError as exc:
        print(f"sami-control: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
