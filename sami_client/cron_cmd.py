"""`sami cron runs`: the runs of a service's cron job, newest first (docs/cron.md).

    sami cron runs SERVICE --env ENV [--limit N] [--output json]

One line per run: when it was scheduled (UTC), how it ended, the exit code of the task that
decided it, how long it took, the job (compose service), the deployment that installed the
job and what happened (`1/1 task(s) completed`, `task 1: task: non-zero exit (3)`). With
--output json, a list of sami.v1.CronRun objects (field names as in the .proto).

`register(subparsers)` adds the command to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from sami_client import argtypes, render
from sami_client.context import Context
from sami_client.errors import ExitCode
from sami_client.pb import cron_pb2

DEFAULT_LIMIT = 20


def outcome_name(outcome: int) -> str:
    return render.enum_name(cron_pb2.CronRunOutcome.DESCRIPTOR, outcome)


def _utc(ts: timestamp_pb2.Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    when = ts.ToDatetime(tzinfo=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _duration(r: cron_pb2.CronRun) -> str:
    if not r.HasField("start_time") or not r.HasField("finish_time"):
        return "-"
    seconds = (r.finish_time.ToNanoseconds() - r.start_time.ToNanoseconds()) / 1e9
    if seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def runs_table(runs: list[cron_pb2.CronRun]) -> str:
    rows = [
        (
            _utc(r.scheduled_time),
            outcome_name(r.outcome),
            str(r.exit_code) if r.HasField("exit_code") else "-",
            _duration(r),
            r.job,
            r.deployment_id,
            r.message[:100],
        )
        for r in runs
    ]
    return render.table(
        ("SCHEDULED (UTC)", "OUTCOME", "EXIT", "TOOK", "JOB", "DEPLOYMENT", "MESSAGE"), rows
    )


def _runs(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_cron_runs(
        service=args.service, environment=args.env, page_size=argtypes.page_size(args.limit)
    )
    runs = argtypes.take(found, args.limit)
    ctx.show(runs_table(runs), [render.to_dict(r) for r in runs])
    return int(ExitCode.SUCCEEDED)


def register(subparsers: Any) -> None:
    """Add `cron runs` to the CLI's subparsers."""
    cron = subparsers.add_parser(
        "cron",
        help="cron jobs: the runs the agents started on their schedule",
        description="Cron jobs are deployed like any service (`sami deploy`); the agent starts "
        "each run on the manifest's schedule and reports how it ended.",
    )
    commands = cron.add_subparsers(dest="cron_command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser(
        "runs",
        help="a service's cron runs in one environment, newest first",
        description="The runs of SERVICE's cron job in ENV, most recently reported first: "
        "scheduled time (UTC), outcome, exit code, duration, job, deployment and message.",
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=DEFAULT_LIMIT,
        help="at most N runs (0: all; default 20)",
    )
    p.set_defaults(run=_runs)
