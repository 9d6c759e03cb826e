"""`sami notify`: where deployment outcomes are told (admins only; docs/notifications.md).

    sami notify add NAME --url URL --kind generic|slack|discord|telegram|github
                    [--service S] [--env E] [--events succeeded,failed,…]
                    [--secret-from-file F]
    sami notify list
    sami notify rm NAME
    sami notify test NAME
    sami notify log [NAME] [--limit N]

A target's secret (the webhook's signing secret, GitHub's token) is read from a file so it
stays out of shell history and process lists; the control plane never shows it again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from sami_client import render
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode, SamiError
from sami_client.pb import notify_pb2

KINDS = ("generic", "slack", "discord", "telegram", "github")


def register(commands: Subparsers) -> None:
    top = commands.add_parser("notify", help="tell webhooks, chats and GitHub of outcomes")
    sub = top.add_subparsers(dest="notify_command", required=True, metavar="COMMAND")

    p = sub.add_parser("add", help="add a notification target (admins)")
    p.add_argument("name", help="the target's name (lower-case letters, digits, '-')")
    p.add_argument("--url", required=True, help="where to send (GitHub: the API base URL)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--service", default="", help="only this service (default: every one)")
    p.add_argument("--env", default="", help="only this environment (default: every one)")
    p.add_argument(
        "--events",
        default="",
        help="comma-separated: queued, in_progress, succeeded, failed, rolled_back, "
        "cancelled, torn_down… (default: the kind's own, docs/notifications.md)",
    )
    p.add_argument(
        "--secret-from-file",
        type=Path,
        metavar="FILE",
        help="the signing secret (generic) or the token (github), read from FILE",
    )
    p.set_defaults(run=run_add)

    p = sub.add_parser("list", help="the notification targets")
    p.set_defaults(run=run_list)

    p = sub.add_parser("rm", help="remove a target and its deliveries not yet sent")
    p.add_argument("name")
    p.set_defaults(run=run_rm)

    p = sub.add_parser("test", help="send one sample notification to a target now")
    p.add_argument("name")
    p.set_defaults(run=run_test)

    p = sub.add_parser("log", help="recent deliveries: status, attempts, last error")
    p.add_argument("name", nargs="?", default="", help="one target (default: every one)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(run=run_log)


def _secret(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SamiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"cannot read --secret-from-file {path}: {exc.strerror}",
        ) from None


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    t = ctx.client().create_notify_target(
        args.name,
        args.kind,
        args.url,
        secret=_secret(args.secret_from_file),
        service=args.service,
        environment=args.env,
        events=events,
    )
    ctx.show(f"added {t.kind} target {t.name} ({t.url})", t)
    return int(ExitCode.SUCCEEDED)


def targets_table(targets: list[notify_pb2.NotifyTarget]) -> str:
    return render.table(
        ("NAME", "KIND", "URL", "SERVICE", "ENV", "EVENTS", "SECRET"),
        [
            (
                t.name,
                t.kind,
                t.url,
                t.service or "*",
                t.environment or "*",
                ",".join(t.events) or "(default)",
                "yes" if t.has_secret else "no",
            )
            for t in targets
        ],
    )


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    targets = ctx.client().list_notify_targets()
    text = targets_table(targets) if targets else "no notification targets"
    ctx.show(text, {"targets": [render.to_dict(t) for t in targets]})
    return int(ExitCode.SUCCEEDED)


def run_rm(args: argparse.Namespace, ctx: Context) -> int:
    ctx.client().delete_notify_target(args.name)
    ctx.show(f"removed {args.name}", {"removed": args.name})
    return int(ExitCode.SUCCEEDED)


def run_test(args: argparse.Namespace, ctx: Context) -> int:
    r = ctx.client().test_notify_target(args.name)
    code = f" (HTTP {r.status_code})" if r.status_code else ""
    text = f"sent to {args.name}{code}" if r.ok else f"failed{code}: {r.error}"
    ctx.show(text, r)
    # A receiver that did not take it: as if Sami could not be reached (exit 3).
    return int(ExitCode.SUCCEEDED if r.ok else ExitCode.UNREACHABLE)


def deliveries_table(rows: list[notify_pb2.Delivery]) -> str:
    return render.table(
        ("TIME", "TARGET", "DEPLOYMENT", "EVENT", "STATUS", "TRIES", "HTTP", "LAST ERROR"),
        [
            (
                render.timestamp(d.create_time),
                d.target,
                d.deployment_id,
                d.event,
                d.status,
                str(d.attempts),
                str(d.status_code or "-"),
                d.last_error,
            )
            for d in rows
        ],
    )


def run_log(args: argparse.Namespace, ctx: Context) -> int:
    rows = ctx.client().list_deliveries(args.name, args.limit)
    text = deliveries_table(rows) if rows else "no deliveries"
    ctx.show(text, {"deliveries": [render.to_dict(d) for d in rows]})
    return int(ExitCode.SUCCEEDED)
