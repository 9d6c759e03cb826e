"""`sami`: the command CI and people run against sami-control.

Exit status: 0 success (for a wait: the deployment SUCCEEDED); 1 the deployment FAILED, was
ROLLED_BACK, CANCELLED (a rejected or expired approval too) or SUPERSEDED (for `manifests
lint` and `manifests sync`: the manifests have errors); 2 the request was rejected (bad
input or usage, no permission, unknown name); 3 sami-control could not be reached or
authenticated, or the wait timed out (the outcome is unknown); 141 stdout was closed under
it (`sami history ... | head`), as for a process killed by SIGPIPE.

This module only builds the parser from the command groups (one `*_cmd.py` module each; what
they share is in `sami_client.context`) and dispatches to them.

A group's `register(subparsers)` adds its parsers; a leaf parser sets either
`func(args) -> int` or, to reach sami-control, `run(args, ctx: Context) -> int`; the int is
the exit status. Every parser accepts --addr/--token/--ca/--output; one that defines an
option of the same name itself keeps its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sami_client import (
    admin_cmd,
    approval_cmd,
    artifact_cmd,
    cluster_cmd,
    completion_cmd,
    cron_cmd,
    deployment_cmd,
    manifests_cmd,
    notify_cmd,
    query_cmd,
    release_cmd,
    safety_cmd,
    secret_cmd,
    status_cmd,
    version_cmd,
)
from sami_client.context import CommandParser, Context, Subparsers, execute
from sami_client.errors import ExitCode

__all__ = ["Context", "build_parser", "main", "run"]

# The command groups, in the order `sami --help` lists them.
_GROUPS: tuple[Callable[[Subparsers], object], ...] = (
    artifact_cmd.register,
    deployment_cmd.register,
    approval_cmd.register,
    release_cmd.register,
    safety_cmd.register,
    notify_cmd.register,
    status_cmd.register,
    query_cmd.register,
    cluster_cmd.register,
    secret_cmd.register,
    manifests_cmd.register,
    admin_cmd.register,
    cron_cmd.register,
    version_cmd.register,
    completion_cmd.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="sami",
        description="Register artifacts and deploy them with sami-control.",
        epilog="exit status: 0 ok; 1 deployment failed, rolled back, cancelled or superseded "
        "(manifests lint/sync: the manifests have errors); 2 request rejected; "
        "3 sami-control unreachable or unauthenticated, or wait timed out; 141 stdout closed "
        "(a pipe's reader went away)",
    )
    version_cmd.add_version_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _GROUPS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse exits 0 for --help and 2 for a usage error; return it instead, so main()
        # can be called in-process.
        return exit_.code if isinstance(exit_.code, int) else int(ExitCode.REJECTED)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the command `build_parser()` parsed; returns the exit status."""
    return execute(args)
