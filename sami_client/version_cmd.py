"""`sami version` (and `sami --version`): which Sami this is.

    sami version [--output json]

prints the client's version and sami-control's (ServerService.GetServerInfo, any token
that may read); with --output json: `{"client": "0.1.0", "server": "0.1.0", "store":
"sqlite"}`. When the control plane cannot be asked (unreachable, no token), the client's
version is still printed, with the reason the server's is missing, and the exit status
says so (3).

`register(subparsers)` adds the command to the `sami` CLI; `add_version_flag(parser)` gives
the top-level parser `--version`.
"""

from __future__ import annotations

import argparse

from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode, SamiError
from sami_common.version import VERSION


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"sami {VERSION}")


def register(commands: Subparsers) -> None:
    p = commands.add_parser(
        "version",
        help="the versions of this client and of sami-control",
        description="The version of this sami client, and of sami-control when it reports it.",
    )
    p.set_defaults(run=run_version)


def run_version(args: argparse.Namespace, ctx: Context) -> int:
    try:
        info = ctx.client().server_info()
    except SamiError as err:
        ctx.show(
            f"sami {VERSION}\nsami-control: version not known ({err.message})",
            {"client": VERSION, "server": None, "store": None, "error": err.message},
        )
        return int(err.exit_code)
    ctx.show(
        f"sami {VERSION}\nsami-control {info.version} ({info.store})",
        {"client": VERSION, "server": info.version, "store": info.store},
    )
    return int(ExitCode.SUCCEEDED)
