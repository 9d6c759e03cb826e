"""`sami-agent`: run next to a swarm manager and apply what the control plane assigns.

Without a reachable Docker engine the agent still serves static_file deployments (and says
that swarm/compose are disabled). Exit status: 0 after SIGTERM/SIGINT, 2 for bad usage or
configuration (no token, no executor at all, an unusable key file), 3 when the token is
rejected and --exit-on-auth-error is set.

`sami-agent keygen [--key-file PATH] [--force]` writes a new age key (the agent's half of
the cluster's secrets, docs/secrets.md) and prints its recipient.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sami_agent.connection import Agent, AgentAuthError
from sami_agent.executors import ExecutorUnavailable, build_executors
from sami_agent.keys import (
    AgentKey,
    KeyFileError,
    default_key_file,
    generate_key_file,
    load_or_create_key_file,
    new_key_text,
)
from sami_common import logs
from sami_common.addresses import AddressError, parse_addresses
from sami_common.dial import DEFAULT_ADDR, Endpoint

if TYPE_CHECKING:
    from sami_agent.cron import ScaledClock

# sami_common.httpserve and sami_common.metrics (prometheus_client) are imported only with
# --metrics-listen: an agent that serves no metrics does without them (docs/observability.md).

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3


class UsageError(Exception):
    """Bad arguments or configuration; the message says how to fix it."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The agent's arguments, or those of `sami-agent keygen` (`command` says which)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keygen"]:
        args = keygen_parser().parse_args(argv[1:])
        args.command = "keygen"
        return args
    parser = argparse.ArgumentParser(
        prog="sami-agent",
        description=(
            "Dial the Sami control plane, receive this cluster's deployments and apply them to"
            " the local Docker Swarm. The agent token comes from SAMI_TOKEN or --token-file."
        ),
    )
    from sami_common.version import VERSION  # Here, to leave the import block alone.

    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    parser.add_argument(
        "--control",
        metavar="HOST:PORT[,...]",
        default=os.environ.get("SAMI_ADDR") or DEFAULT_ADDR,
        help="control plane address, or the addresses of its replicas separated by commas:"
        " the agent starts on one at random and moves to the next when its stream breaks"
        " (default: SAMI_ADDR, else %(default)s)",
    )
    parser.add_argument(
        "--agent-id",
        default=socket.gethostname(),
        help="stable name of this agent (default: the host name, %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the agent token from FILE instead of SAMI_TOKEN",
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        default=os.environ.get("SAMI_CA") or None,
        help="PEM file of the CA that signed the control plane's certificate (default:"
        " SAMI_CA; without one the connection is plaintext)",
    )
    parser.add_argument(
        "--client-cert",
        metavar="FILE",
        default=os.environ.get("SAMI_CLIENT_CERT") or None,
        help="PEM client certificate, for a control plane that requires one (mTLS; default:"
        " SAMI_CLIENT_CERT); `sami-control tls init --agent NAME` makes one",
    )
    parser.add_argument(
        "--client-key",
        metavar="FILE",
        default=os.environ.get("SAMI_CLIENT_KEY") or None,
        help="PEM key of --client-cert (default: SAMI_CLIENT_KEY)",
    )
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        default=os.environ.get("SAMI_KEY_FILE") or None,
        help="the agent's age key, which opens the cluster's secrets (default: SAMI_KEY_FILE,"
        f" else {default_key_file()}); created (mode 0600) when it does not exist;"
        " a dry-run agent uses one only when given one",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="touch no Docker engine: report what each deployment would do",
    )
    parser.add_argument(
        "--dry-run-step-seconds",
        type=float,
        default=0.3,
        metavar="S",
        help="pause between dry-run steps (default: %(default)s)",
    )
    parser.add_argument(
        "--ledger",
        metavar="FILE",
        help="with --dry-run: append one JSON line per apply to FILE",
    )
    parser.add_argument(
        "--inventory-interval",
        type=float,
        default=300.0,
        metavar="S",
        help="report the preview stacks this swarm runs every S seconds, so the control"
        " plane removes orphans (default: %(default)s)",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=60.0,
        metavar="S",
        help="send a full live status report every S seconds, besides the changes Docker's"
        " events announce (default: %(default)s)",
    )
    parser.add_argument(
        "--cron-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="look for cron jobs that are due every S seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--cron-time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="for tests and demos: the cron scheduler's clock runs F times faster than real"
        " time from the agent's start (20: a minute every 3 s) (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=os.environ.get("SAMI_METRICS_LISTEN", ""),
        help="serve Prometheus metrics on http://HOST:PORT/metrics, e.g. 127.0.0.1:9465"
        " (default: SAMI_METRICS_LISTEN, else off; they hold no secrets)",
    )
    parser.add_argument(
        "--exit-on-auth-error",
        action="store_true",
        help="exit (status 3) when the control plane rejects the token, instead of retrying",
    )
    args = parser.parse_args(argv)
    args.command = "run"
    return args


def read_token(token_file: str | None) -> str:
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
        if not token:
            raise UsageError(f"the token file {token_file} is empty; put the agent token in it")
        return token
    token = os.environ.get("SAMI_TOKEN", "").strip()
    if not token:
        raise UsageError(
            "no agent token: set SAMI_TOKEN to an agent token for this agent's cluster"
            " (or pass --token-file FILE)"
        )
    return token


def agent_key(args: argparse.Namespace) -> AgentKey | None:
    """The key of --key-file (or its default), created when missing; None for a dry-run
    agent given none (it decrypts nothing, and tests and demos leave no key behind)."""
    if args.dry_run and not args.key_file:
        return None
    path = args.key_file or default_key_file()
    try:
        key, created = load_or_create_key_file(path)
    except KeyFileError as exc:
        raise UsageError(f"{exc} (from --key-file or SAMI_KEY_FILE)") from None
    log = logs.get("sami_agent")
    if created:
        log.info(
            "agent_key_created",
            key_file=path,
            recipient=key.recipient,
            message="a new age key: secrets must be encrypted to this recipient"
            " (it is registered with the control plane when the agent connects)",
        )
    else:
        log.info("agent_key_loaded", key_file=path, recipient=key.recipient)
    return key


def build_agent(args: argparse.Namespace) -> Agent:
    if args.ledger and not args.dry_run:
        raise UsageError("--ledger records dry-run applies only; add --dry-run or drop --ledger")
    if args.ledger and not os.path.isdir(os.path.dirname(os.path.abspath(args.ledger))):
        raise UsageError(f"the folder of the ledger file {args.ledger} does not exist")
    if args.dry_run_step_seconds < 0:
        raise UsageError("--dry-run-step-seconds must be 0 or more")
    if args.ca and not os.path.isfile(args.ca):
        raise UsageError(f"the CA file {args.ca} does not exist (from --ca or SAMI_CA)")
    if bool(args.client_cert) != bool(args.client_key):
        raise UsageError(
            "--client-cert and --client-key go together (or SAMI_CLIENT_CERT and"
            " SAMI_CLIENT_KEY): set both"
        )
    for option, path in (("--client-cert", args.client_cert), ("--client-key", args.client_key)):
        if path and not os.path.isfile(path):
            raise UsageError(f"the file {path} does not exist (from {option})")
    try:
        parse_addresses(args.control)
    except AddressError as exc:
        raise UsageError(f"--control (or SAMI_ADDR): {exc}") from None
    if not args.agent_id.strip():
        raise UsageError("--agent-id must not be empty")
    if not (args.cron_interval > 0 and args.cron_time_scale >= 1):
        raise UsageError("--cron-interval must be more than 0 and --cron-time-scale 1 or more")
    if args.metrics_listen:
        from sami_common.listen import ListenError, split_listen

        try:
            split_listen(args.metrics_listen)
        except ListenError as exc:
            raise UsageError(f"--metrics-listen: {exc}") from None
    endpoint = Endpoint(
        addr=args.control,
        token=read_token(args.token_file),
        ca_file=args.ca,
        client_cert_file=args.client_cert,
        client_key_file=args.client_key,
    )
    key = agent_key(args)
    try:
        built = build_executors(
            dry_run=args.dry_run,
            key=key,
            step_seconds=args.dry_run_step_seconds,
            ledger_path=args.ledger,
            agent_id=args.agent_id,
            cron_clock=None if args.dry_run else _cron_clock(args.cron_time_scale),
        )
    except ExecutorUnavailable as exc:
        raise UsageError(str(exc)) from exc
    return Agent(
        endpoint,
        built.executor,
        args.agent_id,
        exit_on_auth_error=args.exit_on_auth_error,
        inventory_interval=args.inventory_interval,
        status_interval=args.status_interval,
        cron_backend=built.cron,
        cron_interval=args.cron_interval,
        recipient=key.recipient if key is not None else "",
    )


def _cron_clock(scale: float) -> ScaledClock:
    # Imported here: a dry-run agent runs no cron jobs and does without sami_agent.cron.
    from sami_agent.cron import ScaledClock

    return ScaledClock(scale=scale)


async def serve(agent: Agent, metrics_listen: str = "") -> None:
    loop = asyncio.get_running_loop()
    metrics = None
    if metrics_listen:
        from sami_common.listen import ListenError, is_loopback
        from sami_common.metrics import metrics_server

        # On the agent's loop: the metrics read its state without locks.
        metrics = metrics_server(metrics_listen, agent.metrics.registry)
        try:
            await metrics.start()
        except ListenError as exc:
            raise UsageError(str(exc)) from None
        logs.get("sami_agent").info(
            "metrics_serving",
            listen=metrics_listen,
            port=metrics.port,
            loopback=is_loopback(metrics_listen),
        )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    try:
        await agent.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if metrics is not None:
            await metrics.stop()


def keygen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sami-agent keygen",
        description=(
            "Write a new age key for this agent (mode 0600) and print its recipient. Copy the"
            " file to the cluster's other agents to share one key, or let each make its own."
        ),
    )
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        default=os.environ.get("SAMI_KEY_FILE") or default_key_file(),
        help="where to write it (default: SAMI_KEY_FILE, else %(default)s); `-` writes the"
        " key to stdout (e.g. into `docker secret create sami-agent-key -`) and the recipient"
        " to stderr",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing key file (secrets encrypted to the old key no longer open"
        " here until they are set again or rekeyed)",
    )
    return parser


def keygen(args: argparse.Namespace) -> int:
    """`sami-agent keygen`: write a new key, print its recipient (stdout: only that)."""
    if args.key_file == "-":
        text, recipient = new_key_text()
        sys.stdout.write(text)
        print(f"sami-agent keygen: recipient {recipient}", file=sys.stderr)
        return EXIT_OK
    try:
        key = generate_key_file(args.key_file, force=args.force)
    except KeyFileError as exc:
        print(f"sami-agent keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"sami-agent keygen: wrote {key.path}", file=sys.stderr)
    print(key.recipient)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "keygen":
        return keygen(args)
    try:
        logs.configure()
    except logs.InvalidLogLevel as exc:
        print(f"sami-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # What ends the agent is logged like everything else (one JSON object per line).
    log = logs.get("sami_agent")
    try:
        agent = build_agent(args)
    except UsageError as exc:
        log.error("agent_refused_to_start", message=str(exc))
        return EXIT_USAGE
    log.info(
        "agent_starting",
        agent_id=args.agent_id,
        control=args.control,
        dry_run=args.dry_run,
        tls=bool(args.ca or args.client_cert),
        client_certificate=bool(args.client_cert),
    )
    try:
        asyncio.run(serve(agent, args.metrics_listen))
    except AgentAuthError as exc:
        log.error("agent_token_rejected", message=str(exc))
        return EXIT_AUTH
    except UsageError as exc:
        log.error("agent_refused_to_start", message=str(exc))
        return EXIT_USAGE
    return EXIT_OK
