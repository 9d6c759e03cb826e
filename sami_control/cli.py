"""`sami-control`: serve the API, and administer the data folder offline."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from pathlib import Path

from sami_common import logs
from sami_control.core.errors import DomainError
from sami_control.core.settings import Settings
from sami_control.core.store import StorageFailed
from sami_control.defaults import DEFAULT_LISTEN
from sami_control.storage import urls as storage_urls
from sami_control.storage.postgres_schema import SchemaTooNew
from sami_control.storage.urls import BadStoreURL

# Imported by the commands that use them, not by `serve`: `tls init` needs cryptography
# (some 10 MB of a server's memory), the offline commands and backups their own modules.

DEFAULT_DATA = os.environ.get("SAMI_DATA", ".sami")
DEFAULT_STORE = os.environ.get("SAMI_STORE", "")


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        default=DEFAULT_STORE,
        help="postgresql://USER@HOST:PORT/DB[?sslmode=…&pool_size=N] to use PostgreSQL "
        "instead of SQLite in --data (default: $SAMI_STORE; docs/postgresql.md)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sami-control",
        description="The Sami control plane. With no command, `serve` on loopback with "
        f"data in ./{DEFAULT_DATA}.",
    )
    from sami_common.version import VERSION  # Here, to leave the import block alone.

    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default %(default)s)")
    serve.add_argument("--data", default=DEFAULT_DATA, help="data folder (default %(default)s)")
    _add_store(serve)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without TLS (a trusted proxy terminates TLS)",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=os.environ.get("SAMI_TLS_CERT") or None,
        help="serve TLS with this certificate chain (default: $SAMI_TLS_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        metavar="PEM",
        default=os.environ.get("SAMI_TLS_KEY") or None,
        help="the certificate's private key (default: $SAMI_TLS_KEY)",
    )
    serve.add_argument(
        "--client-ca",
        metavar="PEM",
        default=os.environ.get("SAMI_CLIENT_CA") or None,
        help="require client certificates signed by this CA (mTLS; default: $SAMI_CLIENT_CA)",
    )
    serve.add_argument(
        "--max-streams-per-token",
        type=int,
        default=Settings.max_streams_per_token,
        help="open watches (and agent streams) one token may hold; 0: no limit "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--max-previews-per-service",
        type=int,
        default=Settings.max_previews_per_service,
        help="live preview stacks one service may have; 0: no limit (default %(default)s)",
    )
    serve.add_argument(
        "--dashboard-url",
        default="",
        help="the dashboard's address as people reach it (https://sami.example.com): "
        "notifications link to a deployment's page under it",
    )
    serve.add_argument(
        "--notify-backoff",
        type=float,
        default=Settings.notify_backoff,
        help="seconds before a failed notification is tried again, doubling each time "
        "(default %(default)s; docs/notifications.md)",
    )
    serve.add_argument(
        "--notify-max-attempts",
        type=int,
        default=Settings.notify_max_attempts,
        help="tries before a notification is dead-lettered (default %(default)s)",
    )
    serve.add_argument(
        "--notify-retention-days",
        type=float,
        default=Settings.notify_retention / 86400,
        help="days delivered and dead notifications are kept for `sami notify log` "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--drift-grace",
        type=float,
        default=Settings.drift_grace,
        metavar="S",
        help="replicas short or tasks unhealthy for longer than S seconds is drift"
        " (docs/status.md; default %(default)s)",
    )
    serve.add_argument(
        "--drift-redeploy-interval",
        type=float,
        default=Settings.drift_redeploy_interval,
        metavar="S",
        help="redeploy a drifted target with `on_drift: redeploy` at most once every S seconds"
        " (default %(default)s)",
    )
    serve.add_argument(
        "--max-queries-per-agent",
        type=int,
        default=Settings.max_queries_per_agent,
        help="logs and plans one agent answers at once (past it: RESOURCE_EXHAUSTED); "
        "0: no limit (default %(default)s)",
    )
    serve.add_argument(
        "--query-lines-per-second",
        type=float,
        default=Settings.query_lines_per_second,
        help="log lines per second one `sami logs` stream carries at most; 0: no limit "
        "(default %(default)s)",
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
        help="seconds agents get to reconnect after a restart before their leases may"
        " expire; keep it above the agents' largest reconnect backoff (10 s)"
        " (default %(default)s)",
    )
    serve.add_argument("--max-attempts", type=int, default=Settings.max_attempts)
    serve.add_argument(
        "--token-recheck-interval",
        type=float,
        default=Settings.token_recheck_interval,
        help="seconds between re-reads of the open streams' tokens: the longest a token "
        "revoked offline (sami-control token revoke) keeps its streams (default %(default)s)",
    )
    serve.add_argument(
        "--peer-sweep-interval",
        type=float,
        default=Settings.peer_sweep_interval,
        metavar="S",
        help="with other replicas (PostgreSQL): seconds between checks of this replica's "
        "watchers against the store, the safety net under a lost notice "
        "(docs/high-availability.md; default %(default)s)",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=os.environ.get("SAMI_METRICS_LISTEN", ""),
        help="serve Prometheus metrics on http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 "
        "(default: $SAMI_METRICS_LISTEN, else off; no secrets in them: docs/observability.md)",
    )
    serve.add_argument(
        "--webhook-listen",
        metavar="HOST:PORT",
        default=os.environ.get("SAMI_WEBHOOK_LISTEN", ""),
        help="serve the POST /deployment_request webhook on HOST:PORT (HTTPS with --tls-cert; "
        "default: $SAMI_WEBHOOK_LISTEN, else off; docs/webhook.md)",
    )
    serve.add_argument(
        "--ui-listen",
        metavar="HOST:PORT",
        default=os.environ.get("SAMI_UI_LISTEN", ""),
        help="serve the web dashboard on HOST:PORT (HTTPS with --tls-cert; sign in with a "
        "reader token or above; default: $SAMI_UI_LISTEN, else off)",
    )
    serve.add_argument(
        "--stack-policy",
        default=os.environ.get("SAMI_STACK_POLICY", "off"),
        help="strict: refuse, at sync, stack files that would give a stack the host "
        "(host-root or Docker-socket mounts, privileged, host namespaces, ...; SECURITY.md). "
        "Default: $SAMI_STACK_POLICY, else off",
    )

    tok = sub.add_parser("token", help="create, list and revoke tokens (offline)")
    tsub = tok.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token; it is printed once, last")
    create.add_argument("--data", default=DEFAULT_DATA)
    _add_store(create)
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
    _add_store(tl)
    tr = tsub.add_parser("revoke", help="revoke a token by id")
    tr.add_argument("token_id")
    tr.add_argument("--data", default=DEFAULT_DATA)
    _add_store(tr)

    tls = sub.add_parser("tls", help="make TLS certificates")
    tlsub = tls.add_subparsers(dest="tls_command", required=True)
    ti = tlsub.add_parser(
        "init",
        help="create a CA, a server certificate and client certificates in DIR",
        description="Create a private CA (ca.pem, ca-key.pem), a server certificate "
        "(server.pem, server-key.pem; valid for 127.0.0.1, localhost and every --host) and "
        "one client certificate per --agent/--client (agent-NAME.pem, agent-NAME-key.pem). "
        "Keys are written 0600 and nothing is overwritten. Serve with `sami-control serve "
        "--tls-cert DIR/server.pem --tls-key DIR/server-key.pem [--client-ca DIR/ca.pem]`; "
        "give clients SAMI_CA=DIR/ca.pem (and SAMI_CLIENT_CERT/SAMI_CLIENT_KEY for mTLS).",
    )
    ti.add_argument("dir", metavar="DIR")
    ti.add_argument(
        "--host", action="append", default=[], help="a name or address clients dial (repeat)"
    )
    ti.add_argument(
        "--agent", action="append", default=[], help="make a client certificate for this agent"
    )
    ti.add_argument(
        "--client",
        action="append",
        default=[],
        help="make a client certificate for another client, e.g. ci (repeat)",
    )
    ti.add_argument("--days", type=int, default=825, help="validity of the leaf certificates")

    bk = sub.add_parser(
        "backup", help="copy the database consistently, even while sami-control serves"
    )
    bk.add_argument("dest", help="file to write, e.g. /backups/sami-$(date +%%F).db")
    bk.add_argument("--data", default=DEFAULT_DATA)
    _add_store(bk)
    rs = sub.add_parser(
        "restore", help="replace the database with a backup (sami-control must be stopped)"
    )
    rs.add_argument("source", help="a file written by `sami-control backup`")
    rs.add_argument("--data", default=DEFAULT_DATA)
    _add_store(rs)

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
    _add_store(cc)

    mg = sub.add_parser(
        "migrate",
        help="bring the database's schema up to date and print its version",
        description="Apply the schema migrations the database lacks (serve does it at start "
        "too) and print the schema version. Refuses a database written by a newer Sami.",
    )
    mg.add_argument("--data", default=DEFAULT_DATA)
    _add_store(mg)

    st = sub.add_parser("store", help="move data between stores")
    ssub = st.add_subparsers(dest="store_command", required=True)
    sc = ssub.add_parser(
        "copy",
        help="copy a SQLite data folder into an empty PostgreSQL database",
        description="Copy everything of a SQLite data folder (tokens, clusters, artifacts, "
        "manifest revisions, deployments and their events, agents, audit, cron runs) into an "
        "EMPTY PostgreSQL database, ids and sequences kept, in one transaction, then compare "
        "the counts of every table. Stop sami-control first: what it writes meanwhile would "
        "not be copied. The upgrade path from SQLite (docs/postgresql.md).",
    )
    sc.add_argument("--data", default=DEFAULT_DATA, help="the SQLite data folder to copy")
    sc.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST:PORT/DB")
    return p


def _serve(args: argparse.Namespace) -> int:
    # Only `serve` needs the server (gRPC, the dashboard, metrics): the other commands start
    # faster without it.
    from sami_control.server import ControlServer, ListenRefused, ServeConfig

    settings = Settings(
        lease_ttl=args.lease_ttl,
        ack_timeout=args.ack_timeout,
        heartbeat_interval=args.heartbeat_interval,
        restart_grace=args.restart_grace,
        max_attempts=args.max_attempts,
        token_recheck_interval=args.token_recheck_interval,
        peer_sweep_interval=args.peer_sweep_interval,
        max_streams_per_token=args.max_streams_per_token,
        max_previews_per_service=args.max_previews_per_service,
        dashboard_url=args.dashboard_url,
        notify_backoff=args.notify_backoff,
        notify_max_attempts=args.notify_max_attempts,
        notify_retention=args.notify_retention_days * 86400,
        drift_grace=args.drift_grace,
        drift_redeploy_interval=args.drift_redeploy_interval,
        max_queries_per_agent=args.max_queries_per_agent,
        query_lines_per_second=args.query_lines_per_second,
    )
    cfg = ServeConfig(
        listen=args.listen,
        data_dir=Path(args.data),
        store=args.store,
        settings=settings,
        insecure=args.insecure,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        client_ca=Path(args.client_ca) if args.client_ca else None,
        metrics_listen=args.metrics_listen,
        webhook_listen=args.webhook_listen,
        ui_listen=args.ui_listen,
        stack_policy=args.stack_policy,
    )

    async def run() -> None:
        # The grpc.aio server binds to the running loop: build it inside it.
        await ControlServer(cfg).run_until_signalled()

    try:
        asyncio.run(run())
    except ListenRefused as exc:
        # A log line like any other: under a supervisor, the shipper reads it.
        logs.get("sami_control").error("listen_refused", message=str(exc))
        return 2
    return 0


def _tls_init(args: argparse.Namespace) -> int:
    from sami_control import tlsinit

    try:
        made = tlsinit.init(Path(args.dir), args.host, args.agent, args.client, days=args.days)
    except (tlsinit.TLSInitError, OSError) as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    d = Path(args.dir)
    print(f"CA:     {made.ca_cert}  (keep {made.ca_key} offline)")
    print(f"server: {made.server_cert} {made.server_key}")
    for name, (cert, key) in made.clients.items():
        print(f"{name}: {cert} {key}")
    print(
        f"serve:  sami-control serve --tls-cert {made.server_cert} --tls-key {made.server_key}"
        + (f" --client-ca {made.ca_cert}" if made.clients else "")
    )
    print(f"client: SAMI_CA={d / 'ca.pem'}")
    return 0


def _when(t: float) -> str:
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _backup_or_restore(args: argparse.Namespace) -> int:
    from sami_control.storage import is_postgres, maintenance

    if is_postgres(args.store):
        tool = "pg_dump -Fc" if args.command == "backup" else "pg_restore"
        print(
            f"sami-control: {args.command} works on a SQLite data folder; a PostgreSQL "
            f"store is backed up and restored with PostgreSQL's own tools: use {tool} "
            "(docs/postgresql.md)",
            file=sys.stderr,
        )
        return 2

    data = Path(args.data)
    try:
        if args.command == "backup":
            size = maintenance.backup(data, Path(args.dest))
            print(f"backed up {data} to {args.dest} ({size} bytes, integrity checked)")
        else:
            kept = maintenance.restore(data, Path(args.source))
            print(
                f"restored {data} from {args.source}; "
                + (
                    f"the previous database is kept as {kept}"
                    if kept
                    else "there was no database before it"
                )
            )
    except (OSError, ValueError, maintenance.DataDirBusy) as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        logs.configure()
    except logs.InvalidLogLevel as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    if args.command in (None, "serve"):
        if args.command is None:
            args = _parser().parse_args(["serve"])
        return _serve(args)
    if args.command == "tls":
        return _tls_init(args)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    if args.command in ("migrate", "store"):
        from sami_control import storecli

        return storecli.main(args)
    from sami_control import offline

    data = Path(args.data)
    store = args.store or None
    try:
        storage_urls.check(store)
    except BadStoreURL as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
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
                store=store,
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
            for t in offline.list_tokens(data, store=store):
                scope = t.cluster or ",".join(t.services + t.environments) or "-"
                print(
                    f"{t.id:<14}{t.name:<24}{t.role.value:<10}{scope:<36}"
                    f"{_when(t.expires_at):<18}{_when(t.revoked_at)}"
                )
        elif args.command == "token" and args.token_command == "revoke":
            offline.revoke_token(data, args.token_id, store=store)
            print(f"revoked token {args.token_id}")
        elif args.command == "cluster":
            c = offline.add_cluster(data, args.name, args.environments, store=store)
            print(f"created cluster {c.id} serving {', '.join(c.environments)}")
    except DomainError as exc:
        print(f"sami-control: {exc.message}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # storage.sqlite.DataDirUnsafe, or the OS's own
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    except (StorageFailed, BadStoreURL, SchemaTooNew) as exc:
        print(f"sami-control: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
