"""EXTRA_COMMANDS: how other parts of Sami add subcommands to `sami`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from sami_client import cli


@pytest.fixture
def extra_commands() -> Iterator[list]:
    saved = list(cli.EXTRA_COMMANDS)
    try:
        yield cli.EXTRA_COMMANDS
    finally:
        cli.EXTRA_COMMANDS[:] = saved


def test_plain_and_connected_commands(sami, server, extra_commands) -> None:
    def register(subparsers: argparse._SubParsersAction) -> None:
        group = subparsers.add_parser("tool").add_subparsers(dest="tool_command", required=True)
        lint = group.add_parser("lint")
        lint.add_argument("--output", choices=("text", "json"), default="text")  # Its own.
        lint.set_defaults(func=lambda args: 5 if args.output == "json" else 4)
        where = group.add_parser("where")
        where.set_defaults(run=lambda args, ctx: print(ctx.endpoint.addr) or 0)

    extra_commands.append(register)
    assert sami("tool", "lint").code == 4
    assert sami("tool", "lint", "--output", "json").code == 5
    result = sami("tool", "where", "--addr", "127.0.0.1:9")
    assert (result.code, result.out) == (0, "127.0.0.1:9\n")
