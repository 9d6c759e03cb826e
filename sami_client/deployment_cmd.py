"""`sami deploy|watch|get|list|cancel`: request deployments and follow them.

    sami deploy SERVICE --env ENV --artifact REF [--pr N] [--type T] [--request-id X]
                [--reason R] [--force] [--wait-lock]
                [--wait [--timeout DURATION] [--queue-timeout DURATION]] [--plan]
    sami watch ID [--timeout DURATION]
    sami get ID
    sami list [--service S] [--env E] [--state STATE] [--limit N]
    sami cancel ID [--reason R]

`register(subparsers)` adds the group to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import time

from sami_client import argtypes, query_cmd, render
from sami_client.context import DEFAULT_LIST_LIMIT, Context, Subparsers
from sami_client.errors import ExitCode, UsageError
from sami_client.follow import (
    DEFAULT_WAIT_TIMEOUT,
    add_wait_options,
    check_wait_options,
    wait_timeout,
)
from sami_client.pb import deployment_pb2
from sami_client.safety_cmd import create_when_unlocked
from sami_common.durations import format_seconds


def _state(text: str) -> int:
    try:
        return deployment_pb2.DeploymentState.Value(text.upper())
    except ValueError:
        names = ", ".join(_state_names())
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {names}") from None


def _state_names() -> list[str]:
    names = deployment_pb2.DeploymentState.keys()
    return [n for n in names if n != "DEPLOYMENT_STATE_UNSPECIFIED"]


def register(commands: Subparsers) -> None:
    p = commands.add_parser("deploy", help="deploy an artifact; prints the deployment id")
    p.add_argument("service")
    p.add_argument("--env", required=True, help="stage, production or pull_request")
    p.add_argument(
        "--artifact", required=True, help="artifact id, REPO@sha256:... or NAME@sha256:..."
    )
    p.add_argument("--pr", type=int, default=0, help="pull request number (env pull_request)")
    p.add_argument(
        "--type",
        dest="deployment_type",
        default="",
        metavar="TYPE",
        help="swarm, compose, static_file, cron or k8s: needed only when the service has --env "
        "under several deployment types in the synced manifests",
    )
    p.add_argument("--request-id", default="", help="idempotency key: a retry with it deploys once")
    p.add_argument("--reason", default="", help="why (shown in the history)")
    p.add_argument(
        "--force",
        action="store_true",
        help="deploy even an artifact quarantined on the target (it failed or was rolled "
        "back there); recorded in the audit log",
    )
    p.add_argument(
        "--wait-lock",
        action="store_true",
        help="if the target is locked (`sami locks`), wait for the unlock instead of exiting 2 "
        "(bounded by --timeout)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="deploy nothing: show what the deployment would change on the swarm, as an "
        "agent of the target computes it (same as `sami diff`)",
    )
    add_wait_options(p)
    p.set_defaults(run=run_deploy)

    p = commands.add_parser("watch", help="follow a deployment to its end")
    p.add_argument("id")
    p.add_argument(
        "--timeout",
        type=argtypes.duration,
        metavar="DURATION",
        help="give up after this long, exit 3: 90, 90s, 15m, 1h30m "
        f"(default {format_seconds(DEFAULT_WAIT_TIMEOUT)}; 0: never)",
    )
    p.set_defaults(run=run_watch)

    p = commands.add_parser("get", help="show a deployment")
    p.add_argument("id")
    p.set_defaults(run=run_get)

    p = commands.add_parser("list", help="list deployments, newest first")
    p.add_argument("--service", default="")
    p.add_argument("--env", default="")
    p.add_argument(
        "--state",
        type=_state,
        default=deployment_pb2.DEPLOYMENT_STATE_UNSPECIFIED,
        help=", ".join(_state_names()),
    )
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=DEFAULT_LIST_LIMIT,
        help="at most N (0: all; default 50)",
    )
    p.set_defaults(run=run_list)

    p = commands.add_parser("cancel", help="stop a deployment (rolling back what it started)")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.set_defaults(run=run_cancel)


def run_deploy(args: argparse.Namespace, ctx: Context) -> int:
    if args.plan:
        if args.wait or args.wait_lock or args.request_id:
            raise UsageError("--plan deploys nothing: drop --wait, --wait-lock and --request-id")
        return query_cmd.show_plan(ctx, args.service, args.env, args.artifact, args.pr)
    check_wait_options(args, timeout_also_for="--wait-lock" if args.wait_lock else "")
    limit = wait_timeout(args.timeout)
    deadline = None if limit is None else time.monotonic() + limit

    def create() -> deployment_pb2.Deployment:
        return ctx.client().create_deployment(
            args.service,
            args.env,
            args.artifact,
            pull_request=args.pr,
            reason=args.reason,
            request_id=args.request_id,
            deployment_type=args.deployment_type,
            force=args.force,
        )

    if args.wait_lock:
        deployment = create_when_unlocked(ctx, args.service, args.env, create, deadline)
    else:
        deployment = create()
    # What the lock wait took is taken from the --wait's time (0: no limit, as given).
    timeout = args.timeout
    if args.wait_lock and deadline is not None:
        timeout = max(0.001, deadline - time.monotonic())
    return ctx.follower().started(
        deployment, wait=args.wait, timeout=timeout, queue_timeout=args.queue_timeout
    )


def run_watch(args: argparse.Namespace, ctx: Context) -> int:
    return ctx.follower().follow(args.id, wait_timeout(args.timeout))


def run_get(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().get_deployment(args.id)
    ctx.show(render.deployment_detail(deployment), deployment)
    return int(ExitCode.SUCCEEDED)


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_deployments(
        service=args.service,
        environment=args.env,
        state=args.state,
        page_size=argtypes.page_size(args.limit),
    )
    deployments = argtypes.take(found, args.limit)
    ctx.show(render.deployments_table(deployments), [render.to_dict(d) for d in deployments])
    return int(ExitCode.SUCCEEDED)


def run_cancel(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().cancel_deployment(args.id, args.reason)
    text = (
        f"cancel requested: deployment {deployment.id} ({render.what(deployment)}) is "
        f"{render.state_name(deployment.state)}; `sami watch {deployment.id}` shows how it ends"
    )
    ctx.show(text, deployment)
    return int(ExitCode.SUCCEEDED)
