"""`sami`: the command CI and people run against sami-control.

Exit status: 0 success (for a wait: the deployment SUCCEEDED); 1 the deployment FAILED, was
ROLLED_BACK, CANCELLED or SUPERSEDED (for `manifests lint` and `manifests sync`: the
manifests have errors); 2 the request was rejected (bad input or usage, no
permission, unknown name); 3 sami-control could not be reached or authenticated, or the wait
timed out (the outcome is unknown).

More commands plug in through `EXTRA_COMMANDS`: each entry is called with the subparsers
object and adds its parser(s). A leaf parser sets either `func(args) -> int` or, to reach
sami-control, `run(args, ctx: Context) -> int`; the int is the exit status:

    def register(subparsers):
        p = subparsers.add_parser("manifests", help="...")
        p.set_defaults(run=lambda args, ctx: ...)

Parsers created that way accept --addr/--token/--ca/--output like every other command; one
that defines an option of the same name itself keeps its own.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sami_client import (
    admin_cmd,
    argtypes,
    cron_cmd,
    github_actions,
    manifests_cmd,
    release_cmd,
    render,
)
from sami_client.client import SamiClient
from sami_client.errors import ExitCode, SamiError, UsageError
from sami_client.follow import DEFAULT_WAIT_TIMEOUT, Follower, wait_timeout
from sami_client.pb import artifact_pb2, deployment_pb2
from sami_common.dial import DEFAULT_ADDR, Endpoint, TLSFileError

# argparse has no public name for the object add_subparsers() returns.
Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace, "Context"], int]
PlainHandler = Callable[[argparse.Namespace], int]

# Callables that add more subcommands, see the module docstring.
EXTRA_COMMANDS: list[Callable[[Subparsers], None]] = []

_DIGEST_IN_REF = re.compile(r"@(sha256:[0-9a-f]{64})$")
_DEFAULT_LIST_LIMIT = 50


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
        lines = render.error_lines(err, self.endpoint.addr, bool(self.endpoint.token))
        for line in lines:
            self.console.error(line)
        if self.github:
            github_actions.error(self.annotation_stream, "\n".join(lines))


# Parsing


class _CommandParser(argparse.ArgumentParser):
    """Every (sub)command accepts the connection and output options wherever they appear:
    `sami --output json list` and `sami list --output json` both work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # "resolve": an EXTRA_COMMANDS parser may define its own --output; it replaces ours.
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        # SUPPRESS: an option not given to a subcommand must not reset the value given before
        # the subcommand; main() fills in the defaults.
        group = self.add_argument_group("connection and output")
        group.add_argument(
            "--addr",
            default=argparse.SUPPRESS,
            help=f"sami-control host:port (default: $SAMI_ADDR or {DEFAULT_ADDR})",
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
            "-o",
            "--output",
            choices=("text", "json"),
            default=argparse.SUPPRESS,
            help="text for people (default), json for scripts",
        )


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _state(text: str) -> int:
    try:
        return deployment_pb2.DeploymentState.Value(text.upper())
    except ValueError:
        names = ", ".join(_state_names())
        raise argparse.ArgumentTypeError(f"unknown state {text!r}; one of {names}") from None


def _state_names() -> list[str]:
    names = deployment_pb2.DeploymentState.keys()
    return [n for n in names if n != "DEPLOYMENT_STATE_UNSPECIFIED"]


def _kind(text: str) -> int:
    try:
        return artifact_pb2.ArtifactKind.Value(f"ARTIFACT_KIND_{text.upper()}")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown kind {text!r}; one of image, static_file, module"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _CommandParser(
        prog="sami",
        description="Register artifacts and deploy them with sami-control.",
        epilog="exit status: 0 ok; 1 deployment failed, rolled back, cancelled or superseded "
        "(manifests lint/sync: the manifests have errors); 2 request rejected; "
        "3 sami-control unreachable or unauthenticated, or wait timed out",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_artifact_commands(commands)
    _add_deployment_commands(commands)
    release_cmd.register(commands)
    _add_cluster_commands(commands)
    manifests_cmd.register(commands)
    admin_cmd.register(commands)
    cron_cmd.register(commands)
    for register in EXTRA_COMMANDS:
        register(commands)
    return parser


def _add_artifact_commands(commands: Subparsers) -> None:
    artifact = commands.add_parser("artifact", help="register and look up artifacts")
    sub = artifact.add_subparsers(dest="artifact_command", required=True, metavar="COMMAND")

    p = sub.add_parser("register", help="record an artifact CI built; prints its id")
    p.add_argument("name", help="artifact name, e.g. web")
    p.add_argument("--ref", required=True, help="reference pinned by digest: REPO@sha256:...")
    p.add_argument("--digest", help="sha256:<64 hex> (default: taken from --ref)")
    p.add_argument(
        "--kind",
        type=_kind,
        default=artifact_pb2.ARTIFACT_KIND_IMAGE,
        help="image (default), static_file or module",
    )
    p.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    p.add_argument("--git-repo", help="default: from GITHUB_SERVER_URL and GITHUB_REPOSITORY")
    p.add_argument("--git-commit", help="full commit sha (default: GITHUB_SHA)")
    p.add_argument("--ci-run-url", help="default: the GitHub Actions run, from GITHUB_RUN_ID")
    p.add_argument(
        "--label", type=_label, action="append", default=[], help="KEY=VALUE (repeatable)"
    )
    p.set_defaults(run=_artifact_register)

    p = sub.add_parser("get", help="show an artifact")
    p.add_argument("name", help="id, artifacts/ID, REPO@sha256:... or NAME@sha256:...")
    p.set_defaults(run=_artifact_get)

    p = sub.add_parser("list", help="list artifacts, newest first")
    p.add_argument("--name", default="", help="only artifacts with this name")
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=_DEFAULT_LIST_LIMIT,
        help="at most N (0: all; default 50)",
    )
    p.set_defaults(run=_artifact_list)


def _add_deployment_commands(commands: Subparsers) -> None:
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
    p.add_argument("--wait", action="store_true", help="follow the deployment to its end")
    p.add_argument(
        "--timeout",
        type=argtypes.seconds,
        help="with --wait: give up after S seconds, exit 3 "
        f"(default {DEFAULT_WAIT_TIMEOUT:g}; 0: never)",
    )
    p.add_argument(
        "--queue-timeout",
        type=argtypes.seconds,
        metavar="DURATION",
        help="with --wait: exit 3 if no agent has picked the deployment up after DURATION "
        "seconds (it stays queued)",
    )
    p.set_defaults(run=_deploy)

    p = commands.add_parser("watch", help="follow a deployment to its end")
    p.add_argument("id")
    p.add_argument(
        "--timeout",
        type=argtypes.seconds,
        help=f"give up after S seconds, exit 3 (default {DEFAULT_WAIT_TIMEOUT:g}; 0: never)",
    )
    p.set_defaults(run=_watch)

    p = commands.add_parser("get", help="show a deployment")
    p.add_argument("id")
    p.set_defaults(run=_get)

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
        default=_DEFAULT_LIST_LIMIT,
        help="at most N (0: all; default 50)",
    )
    p.set_defaults(run=_list)

    p = commands.add_parser("cancel", help="stop a deployment (rolling back what it started)")
    p.add_argument("id")
    p.add_argument("--reason", default="")
    p.set_defaults(run=_cancel)


def _add_cluster_commands(commands: Subparsers) -> None:
    cluster = commands.add_parser("cluster", help="clusters and the environments they serve")
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")

    p = sub.add_parser("create", help="add a cluster serving some environments")
    p.add_argument("name")
    p.add_argument(
        "--env", action="append", required=True, help="an environment it serves (repeatable)"
    )
    p.set_defaults(run=_cluster_create)

    p = sub.add_parser(
        "update",
        help="set the environments a cluster serves",
        description="Sets every environment the cluster serves: name them all (one left out "
        "is no longer served by it), e.g. `sami cluster update main --env stage --env "
        "production --env pull_request` to add previews.",
    )
    p.add_argument("name")
    p.add_argument(
        "--env", action="append", required=True, help="an environment it serves (repeatable)"
    )
    p.set_defaults(run=_cluster_update)

    p = sub.add_parser("list", help="list clusters")
    p.set_defaults(run=_cluster_list)

    p = commands.add_parser("agents", help="list agents and whether they are connected")
    p.add_argument("--cluster", default="", help="only agents of this cluster")
    p.set_defaults(run=_agents)


# Handlers


def _artifact_register(args: argparse.Namespace, ctx: Context) -> int:
    digest = args.digest
    if not digest:
        match = _DIGEST_IN_REF.search(args.ref)
        if match is None:
            raise UsageError(
                f"--ref {args.ref} is not pinned by digest: pass --digest sha256:<64 hex>, "
                "or a ref ending in @sha256:<64 hex>"
            )
        digest = match.group(1)
    provenance = github_actions.default_provenance(ctx.env)
    if args.git_repo is not None:
        provenance.git_repo = args.git_repo
    if args.git_commit is not None:
        provenance.git_commit = args.git_commit
    if args.ci_run_url is not None:
        provenance.ci_run_url = args.ci_run_url
    artifact = artifact_pb2.Artifact(
        artifact_name=args.name,
        kind=args.kind,
        ref=args.ref,
        digest=digest,
        tags=args.tag,
        provenance=provenance,
        labels=dict(args.label),
    )
    response = ctx.client().register_artifact(artifact)
    stored = response.artifact
    if ctx.github:
        github_actions.write_outputs(ctx.env, {"artifact_id": stored.id, "digest": stored.digest})
    if not ctx.json_output:
        how = "registered" if response.created else "already registered, unchanged:"
        ctx.console.note(f"{how} artifact {stored.artifact_name}@{stored.digest}")
    ctx.show(stored.id, stored)
    return int(ExitCode.SUCCEEDED)


def _artifact_get(args: argparse.Namespace, ctx: Context) -> int:
    artifact = ctx.client().get_artifact(args.name)
    ctx.show(render.artifact_detail(artifact), artifact)
    return int(ExitCode.SUCCEEDED)


def _artifact_list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_artifacts(args.name, page_size=argtypes.page_size(args.limit))
    artifacts = argtypes.take(found, args.limit)
    ctx.show(render.artifacts_table(artifacts), [render.to_dict(a) for a in artifacts])
    return int(ExitCode.SUCCEEDED)


def _deploy(args: argparse.Namespace, ctx: Context) -> int:
    if (args.timeout is not None or args.queue_timeout is not None) and not args.wait:
        raise UsageError("--timeout and --queue-timeout limit --wait: add --wait, or drop them")
    deployment = ctx.client().create_deployment(
        args.service,
        args.env,
        args.artifact,
        pull_request=args.pr,
        reason=args.reason,
        request_id=args.request_id,
        deployment_type=args.deployment_type,
    )
    return ctx.follower().started(
        deployment, wait=args.wait, timeout=args.timeout, queue_timeout=args.queue_timeout
    )


def _watch(args: argparse.Namespace, ctx: Context) -> int:
    return ctx.follower().follow(args.id, wait_timeout(args.timeout))


def _get(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().get_deployment(args.id)
    ctx.show(render.deployment_detail(deployment), deployment)
    return int(ExitCode.SUCCEEDED)


def _list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_deployments(
        service=args.service,
        environment=args.env,
        state=args.state,
        page_size=argtypes.page_size(args.limit),
    )
    deployments = argtypes.take(found, args.limit)
    ctx.show(render.deployments_table(deployments), [render.to_dict(d) for d in deployments])
    return int(ExitCode.SUCCEEDED)


def _cancel(args: argparse.Namespace, ctx: Context) -> int:
    deployment = ctx.client().cancel_deployment(args.id, args.reason)
    text = (
        f"cancel requested: deployment {deployment.id} ({render.what(deployment)}) is "
        f"{render.state_name(deployment.state)}; `sami watch {deployment.id}` shows how it ends"
    )
    ctx.show(text, deployment)
    return int(ExitCode.SUCCEEDED)


def _cluster_create(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.client().create_cluster(args.name, args.env)
    text = f"cluster {cluster.cluster_id} serves {', '.join(cluster.environments)}"
    ctx.show(text, cluster)
    return int(ExitCode.SUCCEEDED)


def _cluster_update(args: argparse.Namespace, ctx: Context) -> int:
    cluster = ctx.client().update_cluster(args.name, args.env)
    text = f"cluster {cluster.cluster_id} serves {', '.join(cluster.environments)}"
    ctx.show(text, cluster)
    return int(ExitCode.SUCCEEDED)


def _cluster_list(args: argparse.Namespace, ctx: Context) -> int:
    clusters = ctx.client().list_clusters()
    ctx.show(render.clusters_table(clusters), [render.to_dict(c) for c in clusters])
    return int(ExitCode.SUCCEEDED)


def _agents(args: argparse.Namespace, ctx: Context) -> int:
    agents = ctx.client().list_agents(args.cluster)
    ctx.show(render.agents_table(agents), [render.to_dict(a) for a in agents])
    return int(ExitCode.SUCCEEDED)


# Entry point


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (e.g. captured in tests): nothing will flush it.


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
    console = render.Console(out=sys.stdout, err=sys.stderr)
    endpoint = Endpoint.from_env(
        addr=getattr(args, "addr", None),
        token=getattr(args, "token", None),
        ca_file=getattr(args, "ca", None),
    )
    ctx = Context(
        endpoint=endpoint,
        json_output=getattr(args, "output", "text") == "json",
        env=os.environ,
        console=console,
    )
    try:
        if hasattr(args, "run"):
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
        # The reader went away (`sami list | head`): stop quietly, and keep Python from
        # failing again when it flushes stdout at exit.
        _silence_stdout()
        return int(ExitCode.UNREACHABLE)
    except KeyboardInterrupt:
        console.error("interrupted; a deployment already requested goes on (`sami watch ID`)")
        return 130
    finally:
        ctx.close()
