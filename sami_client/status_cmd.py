"""`sami status`: what runs where (docs/status.md).

    sami status [SERVICE] [--env ENV] [-o json]

One row per service and environment (and pull-request preview) and swarm service: the
artifact that runs and its short digest, the deployment that put it there and when, replicas
running/desired, health, and drift (live differs from what Sami deployed) with its reason.
A row whose agent is gone is marked stale, with how long ago it last reported.
`register(subparsers)` adds the command to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import time

from sami_client import render
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode
from sami_client.pb import status_pb2


def register(commands: Subparsers) -> None:
    p = commands.add_parser(
        "status", help="what runs where: artifact, replicas, health, drift (agents' live state)"
    )
    p.add_argument("service", nargs="?", default="", help="one service (default: every one)")
    p.add_argument("--env", default="", help="stage, production or pull_request")
    p.set_defaults(run=run_status)


def short_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else "-"


def age(seconds: float) -> str:
    """`45s`, `12m`, `3h`, `2d`: how long ago, roughly."""
    if seconds < 120:
        return f"{max(0, int(seconds))}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def _since(ts: object, now: float) -> float:
    return now - ts.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


def health_text(s: status_pb2.ServiceStatus, now: float) -> str:
    text = s.health
    if s.unhealthy_tasks:
        text += f" ({s.unhealthy_tasks} unhealthy)"
    if s.stale:
        text += f" STALE ({age(_since(s.report_time, now))} ago)"
    return text


def drift_text(s: status_pb2.ServiceStatus, now: float) -> str:
    if not s.drifted:
        return "-"
    when = f" ({age(_since(s.drift_time, now))} ago)" if s.HasField("drift_time") else ""
    return f"DRIFT: {s.drift_reason}{when}"


def status_table(rows: list[status_pb2.ServiceStatus], now: float) -> str:
    return render.table(
        ("SERVICE", "ENVIRONMENT", "SWARM SERVICE", "ARTIFACT", "DEPLOYED BY", "REPLICAS",
         "HEALTH", "DRIFT"),
        [
            (
                s.service,
                s.environment + (f" #{s.pull_request}" if s.pull_request else ""),
                f"{s.stack_name}_{s.swarm_service}",
                f"{s.artifact_name or '?'} {short_digest(s.running_digest)}",
                f"{s.deployment_id} {render.timestamp(s.deploy_time)}",
                f"{s.running_replicas}/{s.desired_replicas}",
                health_text(s, now),
                drift_text(s, now),
            )
            for s in rows
        ],
    )  # fmt: skip


def run_status(args: argparse.Namespace, ctx: Context) -> int:
    rows = ctx.client().get_status(args.service, args.env)
    text = status_table(rows, time.time()) if rows else "no live status reported yet"
    ctx.show(text, {"services": [render.to_dict(s) for s in rows]})
    return int(ExitCode.SUCCEEDED)
