"""`sami version` (and `sami --version`): which Sami this is.

    sami version [--output json]

prints the client's version and what is known of sami-control's. The API has no call that
returns the server's version yet, so that line says so and how to find it out; with
--output json: `{"client": "0.1.0", "server": null}`.

`register(subparsers)` adds the command to the `sami` CLI; `add_version_flag(parser)` gives
the top-level parser `--version`.
"""

from __future__ import annotations

import argparse

from sami_client.context import Context, Subparsers
from sami_client.errors import ExitCode
from sami_common.version import VERSION

SERVER_UNKNOWN = (
    "sami-control: version not known: its API does not report it "
    "(`sami-control --version` on its host shows it)"
)


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
    ctx.show(f"sami {VERSION}\n{SERVER_UNKNOWN}", {"client": VERSION, "server": None})
    return int(ExitCode.SUCCEEDED)
