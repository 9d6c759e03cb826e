"""`sami artifact register|get|list`: the artifacts CI built, recorded by digest.

    sami artifact register NAME --ref REPO@sha256:... [--kind K] [--tag T]... [--label K=V]...
    sami artifact get ID|REPO@sha256:...|NAME@sha256:...
    sami artifact list [--name NAME] [--limit N]

`register(subparsers)` adds the group to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import re

from sami_client import argtypes, github_actions, render
from sami_client.context import DEFAULT_LIST_LIMIT, Context, Subparsers
from sami_client.errors import ExitCode, UsageError
from sami_client.pb import artifact_pb2

_DIGEST_IN_REF = re.compile(r"@(sha256:[0-9a-f]{64})$")


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _kind(text: str) -> int:
    try:
        return artifact_pb2.ArtifactKind.Value(f"ARTIFACT_KIND_{text.upper()}")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown kind {text!r}; one of image, static_file, module"
        ) from None


def register(commands: Subparsers) -> None:
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
    p.set_defaults(run=run_register)

    p = sub.add_parser("get", help="show an artifact")
    p.add_argument("name", help="id, artifacts/ID, REPO@sha256:... or NAME@sha256:...")
    p.set_defaults(run=run_get)

    p = sub.add_parser("list", help="list artifacts, newest first")
    p.add_argument("--name", default="", help="only artifacts with this name")
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=DEFAULT_LIST_LIMIT,
        help="at most N (0: all; default 50)",
    )
    p.set_defaults(run=run_list)


def run_register(args: argparse.Namespace, ctx: Context) -> int:
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


def run_get(args: argparse.Namespace, ctx: Context) -> int:
    artifact = ctx.client().get_artifact(args.name)
    ctx.show(render.artifact_detail(artifact), artifact)
    return int(ExitCode.SUCCEEDED)


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_artifacts(args.name, page_size=argtypes.page_size(args.limit))
    artifacts = argtypes.take(found, args.limit)
    ctx.show(render.artifacts_table(artifacts), [render.to_dict(a) for a in artifacts])
    return int(ExitCode.SUCCEEDED)
