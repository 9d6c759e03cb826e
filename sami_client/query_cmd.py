"""`sami logs|diff` (and `sami deploy --plan`): questions an agent of the target's cluster
answers from the swarm itself, relayed by sami-control (docs/agent-protocol.md, "Queries").

    sami logs SERVICE --env ENV [--pr N] [--since DURATION] [--tail N] [--follow]
    sami diff SERVICE --env ENV --artifact REF [--pr N]

`logs` prints the service's Docker logs (stdout lines on stdout, stderr lines on stderr, each
with its time and task; `-o json`: one JSON object per line); `--follow` goes on until
interrupted. `diff` shows what deploying the artifact would change (`docker stack deploy`
of the pinned stack against the services running now), changing nothing.
`register(subparsers)` adds the group to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from sami_client import argtypes
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode, UsageError
from sami_client.pb import query_pb2

MAX_TAIL = 10_000
ACTION_MARKS = {"create": "+", "update": "~", "unchanged": "=", "not_pruned": "!"}


def _tail(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tail {text!r} is not a number") from None
    if not 0 < n <= MAX_TAIL:
        raise argparse.ArgumentTypeError(f"--tail must be between 1 and {MAX_TAIL}")
    return n


def register(commands: Subparsers) -> None:
    p = commands.add_parser(
        "logs", help="a service's Docker logs, streamed from its agent (admins, deployers)"
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument("--pr", type=int, default=0, help="pull request number (env pull_request)")
    p.add_argument(
        "--since",
        type=argtypes.duration,
        metavar="DURATION",
        help="only lines from the last DURATION (90s, 10m, 2h)",
    )
    p.add_argument(
        "--tail",
        type=_tail,
        metavar="N",
        help=f"the last N lines of each task (at most {MAX_TAIL})",
    )
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until interrupted"
    )
    p.set_defaults(run=run_logs)

    p = commands.add_parser(
        "diff", help="what deploying an artifact would change on the swarm (changes nothing)"
    )
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument(
        "--artifact", required=True, help="artifact id, REPO@sha256:... or NAME@sha256:..."
    )
    p.add_argument("--pr", type=int, default=0, help="pull request number (env pull_request)")
    p.set_defaults(run=run_diff)


def run_logs(args: argparse.Namespace, ctx: Context) -> int:
    if args.since is not None and args.since <= 0:
        raise UsageError("--since must be longer than 0")
    calls: list[Any] = []
    lines = ctx.client().service_logs(
        args.service,
        args.env,
        pull_request=args.pr,
        since=args.since,
        tail=args.tail or 0,
        follow=args.follow,
        calls=calls,
    )
    console = ctx.console
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        # Ctrl-C cancels the call itself: the stream ends in the main thread's next read,
        # instead of relying on an interrupt inside gRPC's wait (which could leave the
        # process hanging at exit).
        stopped.set()
        for call in calls:
            call.cancel()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        for line in lines:
            if ctx.json_output:
                console.print(json.dumps(log_line_dict(line), sort_keys=True))
            elif line.stream == "stderr":
                # The service's own stderr, as it printed it (no `sami:` prefix).
                print(format_log_line(line), file=console.err, flush=True)
            else:
                console.print(format_log_line(line))
    except KeyboardInterrupt:
        # Following ends when its reader says so: that is success (the agent is told).
        return int(ExitCode.SUCCEEDED)
    except Exception:
        if stopped.is_set():  # the cancelled call's error: the reader said stop
            return int(ExitCode.SUCCEEDED)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        lines.close()  # type: ignore[attr-defined]
    return int(ExitCode.SUCCEEDED)


def log_line_dict(line: query_pb2.LogLine) -> dict[str, str]:
    return {
        "time": _time(line),
        "task": line.task,
        "stream": line.stream,
        "text": line.text,
    }


def format_log_line(line: query_pb2.LogLine) -> str:
    """`TIME TASK | TEXT`, as `docker service logs --timestamps` prints it."""
    return f"{_time(line)} {line.task} | {line.text}"


def _time(line: query_pb2.LogLine) -> str:
    if not line.HasField("time"):
        return ""
    return line.time.ToJsonString()


def run_diff(args: argparse.Namespace, ctx: Context) -> int:
    return show_plan(ctx, args.service, args.env, args.artifact, args.pr)


def show_plan(ctx: Context, service: str, env: str, artifact: str, pull_request: int) -> int:
    """Ask for the plan and show it (`sami diff`, `sami deploy --plan`)."""
    plan = ctx.client().plan_deployment(service, env, artifact, pull_request=pull_request)
    ctx.show(plan_text(plan), plan_dict(plan))
    return int(ExitCode.SUCCEEDED)


def plan_dict(plan: query_pb2.PlanDeploymentResponse) -> dict[str, Any]:
    return {
        "stack_name": plan.stack_name,
        "cluster": plan.cluster,
        "agent_id": plan.agent_id,
        "image": plan.image,
        "services": [
            {
                "name": s.name,
                "action": s.action,
                "changes": [
                    {"field": c.field, "before": c.before, "after": c.after} for c in s.changes
                ],
            }
            for s in plan.services
        ],
    }


def plan_text(plan: query_pb2.PlanDeploymentResponse) -> str:
    """A readable diff: one block per service, `+` create, `~` update, `=` unchanged,
    `!` left running (no longer in the stack files; Sami never prunes)."""
    out = [
        f"plan for stack {plan.stack_name} (cluster {plan.cluster}, computed by agent "
        f"{plan.agent_id}); image {plan.image}; nothing was changed"
    ]
    counts: dict[str, int] = {}
    for s in plan.services:
        counts[s.action] = counts.get(s.action, 0) + 1
        mark = ACTION_MARKS.get(s.action, "?")
        label = "not pruned (left running)" if s.action == "not_pruned" else s.action
        out.append(f"{mark} {s.name}: {label}")
        for c in s.changes:
            if c.field == "env":
                out.append(f"    env: {c.after}")
            elif s.action == "create" or not c.before:
                out.append(f"    {c.field}: {c.after}")
            else:
                out.append(f"    {c.field}: {c.before or '(none)'} -> {c.after or '(none)'}")
    summary = ", ".join(
        f"{counts[a]} {word}"
        for a, word in (
            ("create", "to create"),
            ("update", "to update"),
            ("unchanged", "unchanged"),
            ("not_pruned", "left running"),
        )
        if counts.get(a)
    )
    out.append(summary or "no services")
    return "\n".join(out)
