"""What every `sami` command shares: the `Context` a handler receives, the parser class
that gives every (sub)command the connection and output options, and `execute`, which runs
a parsed command and turns its errors into exit statuses.

The command groups (`*_cmd.py`) import this module; `sami_client.cli` imports them and
this module, never the other way round.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from sami_client import github_actions, render
from sami_client.client import SamiClient
from sami_client.errors import ExitCode, SamiError, UsageError
from sami_client.follow import Follower
from sami_common.addresses import AddressError, describe, parse_addresses
from sami_common.dial import DEFAULT_ADDR, Endpoint, TLSFileError

# argparse has no public name for the object add_subparsers() returns.
Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace, "Context"], int]
PlainHandler = Callable[[argparse.Namespace], int]

DEFAULT_LIST_LIMIT = 50
# The exit status of a command whose stdout was closed under it: 128 + SIGPIPE, as a shell
# reports a process that SIGPIPE killed.
CLOSED_PIPE = 128 + 13


@dataclass
class Context:
    """What a command handler needs besides its arguments."""

    endpoint: Endpoint
    json_output: bool
    env: Mapping[str, str]
    console: render.Console
    _client: SamiClient | None = field(default=None, repr=False)

    def client(self) -> SamiClient:
        if self._client is None:
            self._client = SamiClient(self.endpoint)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def github(self) -> bool:
        return github_actions.enabled(self.env)

    @property
    def annotation_stream(self) -> TextIO:
        return github_actions.command_stream(
            self.console.out, self.console.err, json_output=self.json_output
        )

    def show(self, text: str, value: Any) -> None:
        """Print a result: `text` for people, `value` as JSON with --output json."""
        self.console.print(render.to_json(value) if self.json_output else text)

    def follower(self) -> Follower:
        return Follower(self.client(), self.console, json_output=self.json_output, env=self.env)

    def report(self, err: SamiError) -> None:
        try:
            where = describe(self.endpoint.addresses)
        except AddressError:
            where = self.endpoint.addr  # A command that reaches no server (manifests lint).
        lines = render.error_lines(err, where, bool(self.endpoint.token))
        for line in lines:
            self.console.error(line)
        if self.github:
            github_actions.error(self.annotation_stream, "\n".join(lines))


class CommandParser(argparse.ArgumentParser):
    """Every (sub)command accepts the connection and output options wherever they appear:
    `sami --output json list` and `sami list --output json` both work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # "resolve": a command's parser may define its own --output; it replaces ours.
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        # SUPPRESS: an option not given to a subcommand must not reset the value given before
        # the subcommand; execute() fills in the defaults.
        group = self.add_argument_group("connection and output")
        group.add_argument(
            "--addr",
            default=argparse.SUPPRESS,
            metavar="ADDR",
            help="sami-control's host:port, or several separated by commas (its replicas: "
            "an unreachable one is skipped) (default: $SAMI_ADDR or "
            f"{DEFAULT_ADDR})",
        )
        group.add_argument(
            "--token",
            default=argparse.SUPPRESS,
            help="bearer token (default: $SAMI_TOKEN; prefer the variable, ps shows arguments)",
        )
        group.add_argument(
            "--ca",
            default=argparse.SUPPRESS,
            help="PEM file of the CA of sami-control's TLS certificate (default: $SAMI_CA)",
        )
        group.add_argument(
            "--client-cert",
            default=argparse.SUPPRESS,
            help="PEM file of this client's certificate, when sami-control asks for one "
            "(serve --client-ca) (default: $SAMI_CLIENT_CERT)",
        )
        group.add_argument(
            "--client-key",
            default=argparse.SUPPRESS,
            help="PEM file of that certificate's key (default: $SAMI_CLIENT_KEY)",
        )
        group.add_argument(
            "-o",
            "--output",
            choices=("text", "json"),
            default=argparse.SUPPRESS,
            help="text for people (default), json for scripts",
        )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (e.g. captured in tests): nothing will flush it.


def _check_addresses(args: argparse.Namespace, endpoint: Endpoint) -> None:
    """A bad address list is a usage error, reported before anything is sent. (Commands that
    reach no server, like `manifests lint`, don't care.)"""
    try:
        parse_addresses(endpoint.addr)
    except AddressError as err:
        source = "--addr" if getattr(args, "addr", None) else "SAMI_ADDR"
        raise UsageError(f"{source}: {err}") from None


def execute(args: argparse.Namespace) -> int:
    """Run the command a `CommandParser` parsed; returns the exit status."""
    console = render.Console(out=sys.stdout, err=sys.stderr)
    endpoint = Endpoint.from_env(
        addr=getattr(args, "addr", None),
        token=getattr(args, "token", None),
        ca_file=getattr(args, "ca", None),
        client_cert_file=getattr(args, "client_cert", None),
        client_key_file=getattr(args, "client_key", None),
    )
    ctx = Context(
        endpoint=endpoint,
        json_output=getattr(args, "output", "text") == "json",
        env=os.environ,
        console=console,
    )
    try:
        if hasattr(args, "run"):
            _check_addresses(args, endpoint)
            handler: Handler = args.run
            return handler(args, ctx)
        plain: PlainHandler = args.func
        return plain(args)
    except SamiError as err:
        ctx.report(err)
        return err.exit_code
    except UsageError as err:
        console.error(f"error: {err}")
        return int(ExitCode.REJECTED)
    except TLSFileError as err:
        console.error(f"error: {err}")
        return int(ExitCode.REJECTED)
    except BrokenPipeError:
        # The reader went away (`sami history ... | head`): stop quietly, keep Python from
        # failing again when it flushes stdout at exit, and exit as a process killed by
        # SIGPIPE does. Not 0: a `deploy --wait` cut short did not see its outcome; not 3:
        # sami-control was reachable.
        _silence_stdout()
        return CLOSED_PIPE
    except KeyboardInterrupt:
        console.error("interrupted; a deployment already requested goes on (`sami watch ID`)")
        return 130
    finally:
        ctx.close()
