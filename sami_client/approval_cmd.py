"""`sami approve|reject`: release or stop a deployment AWAITING_APPROVAL (a target whose
sami.yaml says `approval: required`; docs/release-safety.md).

    sami approve ID [--comment TEXT]
    sami reject ID --reason TEXT

`register(subparsers)` adds the group to the `sami` CLI.
"""

from __future__ import annotations

import argparse

from sami_client import render
from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode


def register(commands: Subparsers) -> None:
    p = commands.add_parser(
        "approve",
        help="release a deployment awaiting approval into the queue (not your own request)",
    )
    p.add_argument("id")
    p.add_argument("--comment", default="", help="recorded with the approval")
    p.set_defaults(run=run_approve)

    p = commands.add_parser(
        "reject", help="stop a deployment awaiting approval (it ends CANCELLED, with the reason)"
    )
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="why: shown to the requester")
    p.set_defaults(run=run_reject)


def run_approve(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().approve_deployment(args.id, args.comment)
    text = (
        f"approved: deployment {deployment.id} ({render.what(deployment)}) is "
        f"{render.state_name(deployment.state)}; `sami watch {deployment.id}` follows it"
    )
    ctx.show(text, deployment)
    return int(ExitCode.SUCCEEDED)


def run_reject(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().reject_deployment(args.id, args.reason)
    text = (
        f"rejected: deployment {deployment.id} ({render.what(deployment)}) is "
        f"{render.state_name(deployment.state)}: {deployment.status_message}"
    )
    ctx.show(text, deployment)
    return int(ExitCode.SUCCEEDED)
