"""`sami manifests ...`: work with a deployments repo checkout and its synced revisions.

`register(subparsers)` adds the `manifests` command group to the `sami` CLI (which always
has it); `main(argv)` runs the group on its own (`python -m sami_client.manifests_cmd
manifests lint DIR`).

    sami manifests lint DIR [--output text|json]

prints one line per problem, `file:line: severity: message — hint`, and exits 1 when any
problem is an error, 0 otherwise (warnings are printed but do not fail); 2 when DIR cannot
be read as a directory. It never contacts sami-control.

    sami manifests sync DIR [--commit SHA]

lints DIR the same way and, when there is no error, uploads it as a manifest revision
(sami-control validates it again and makes it current); the revision id is the last line of
stdout. Exit status: 0 synced (new or already stored), 1 the local lint found errors
(nothing was sent), 2 sami-control refused the revision or the token may not sync, 3
sami-control unreachable or unauthenticated.

    sami manifests list [--limit N]
    sami manifests show [ID|current] [--files]

show the synced revisions, most recently synced first, and one revision's manifests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import grpc

from sami_client import argtypes, github_actions, render
from sami_client.client import SamiClient
from sami_client.context import CommandParser, Context, execute
from sami_client.errors import ExitCode, SamiError

if TYPE_CHECKING:
    from sami_manifests import Problem, ResolvedManifest, ScanResult

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

_COMMIT = re.compile(r"[0-9a-f]{40}")
_ID_PREFIX = re.compile(r"[0-9a-f]{4,63}")
_GIT_TIMEOUT = 10.0
_DEFAULT_LIST_LIMIT = 50


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `manifests` (lint, sync, list, show) to the CLI's subparsers; returns the group's
    parser.

    `lint` sets `func(args, ctx=None) -> int` (the exit status) as its default: it needs no
    connection. `sync`, `list` and `show` set `run(args, ctx) -> int`, called by the sami CLI
    with its Context.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "manifests",
        help="check and sync a deployments repo (services/<service>/<type>/<env>/sami.yaml)",
        description="Work with a deployments repo checkout and its synced revisions.",
    )
    commands = parser.add_subparsers(dest="manifests_command", metavar="COMMAND")
    commands.required = True
    lint_parser = commands.add_parser(
        "lint",
        help="validate the layout, every sami.yaml and the stack files they name",
        description=(
            "Validate a deployments repo: layout, sami.yaml schema and stack-file pre-flight "
            "checks. Exits 1 when any problem is an error; warnings do not fail."
        ),
    )
    lint_parser.add_argument("dir", metavar="DIR", help="root of the deployments repo")
    # The sami CLI's parser class already gives every command -o/--output, which must stay
    # as it is: replacing it (default "text") would undo `sami -o json manifests lint DIR`.
    if "--output" not in lint_parser._option_string_actions:
        lint_parser.add_argument(
            "-o",
            "--output",
            choices=("text", "json"),
            default="text",
            help="text: one `file:line: severity: message — hint` line per problem; json: a report",
        )
    lint_parser.add_argument(
        "--stack-policy",
        choices=("off", "strict"),
        default="off",
        help="strict: also refuse what `sami-control serve --stack-policy strict` refuses at "
        "sync (host-root and Docker-socket mounts, privileged, host namespaces, ...; "
        "SECURITY.md)",
    )
    lint_parser.set_defaults(func=run_lint)

    p = commands.add_parser(
        "sync",
        help="lint a deployments repo, then upload it as the current manifest revision",
        description=(
            "Lint DIR; when it has no error, upload it to sami-control, which validates it "
            "again and makes it the revision new deployments resolve against. Prints the "
            "revision id as the last line of stdout. Exit status: 1 lint errors (nothing was "
            "sent), 2 refused by sami-control, 3 sami-control unreachable or unauthenticated."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="root of the deployments repo")
    p.add_argument(
        "--commit",
        default=None,
        metavar="SHA",
        help="the commit DIR holds, 40 hex digits (default: `git -C DIR rev-parse HEAD` when "
        "DIR is in a git checkout, else $GITHUB_SHA, else none)",
    )
    p.set_defaults(run=run_sync)

    p = commands.add_parser("list", help="list synced revisions, most recently synced first")
    p.add_argument(
        "--limit",
        type=argtypes.limit,
        default=_DEFAULT_LIST_LIMIT,
        help=f"at most N (0: all; default {_DEFAULT_LIST_LIMIT})",
    )
    p.set_defaults(run=run_list)

    p = commands.add_parser("show", help="show a revision's manifests and warnings")
    p.add_argument(
        "name",
        nargs="?",
        default="current",
        metavar="ID",
        help="a revision id (or its first 4+ characters), or `current` (default)",
    )
    p.add_argument("--files", action="store_true", help="also list every file, its size and hash")
    p.set_defaults(run=run_show)
    return parser


# Lint


def scan(files: Mapping[str, bytes], stack_policy: str = "off") -> ScanResult:
    """The validator, loaded (with yaml) only by the commands that read a repo: every other
    `sami` command (a CI job's `sami deploy`) starts that much faster. Also the seam tests
    replace to get the local lint out of the way."""
    import sami_manifests as manifests

    return manifests.scan(files, stack_policy=stack_policy)


def _check(
    root: str, stack_policy: str = "off"
) -> tuple[dict[str, bytes], list[Problem], tuple[ResolvedManifest, ...]]:
    """Read and lint `root`: (files, problems, valid manifests); with `stack_policy`
    strict, what sami-control's strict stack policy would refuse is an error too."""
    from sami_manifests import Problem, RepoReadError, Severity, read_tree

    try:
        files = read_tree(root)
    except RepoReadError as exc:
        problems = list(exc.problems) or [
            Problem(Severity.ERROR, "", 0, exc.message, "", "unreadable")
        ]
        return {}, problems, ()
    result = scan(files, stack_policy)
    return files, list(result.problems), result.manifests


def _report(
    root: str, problems: Sequence[Problem], manifests: Sequence[ResolvedManifest]
) -> dict[str, Any]:
    errors = sum(1 for p in problems if p.is_error)
    return {
        "root": root,
        "ok": errors == 0,
        "errors": errors,
        "warnings": len(problems) - errors,
        "problems": [p.to_dict() for p in problems],
        "manifests": [
            {
                "path": m.manifest_path,
                "service": m.service,
                "type": m.deployment_type,
                "environment": m.environment,
            }
            for m in manifests
        ],
    }


def _summary(problems: Sequence[Problem], manifests: Sequence[ResolvedManifest]) -> str:
    errors = sum(1 for p in problems if p.is_error)
    warnings = len(problems) - errors
    return (
        f"{len(manifests)} manifest{'s' if len(manifests) != 1 else ''} valid, "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )


def run_lint(args: argparse.Namespace, ctx: object = None) -> int:
    """Handler of `sami manifests lint`; `ctx` (the CLI's Context) is not needed: linting
    is local and never contacts sami-control."""
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    root: str = args.dir
    output = getattr(args, "output", None) or "text"
    if not os.path.isdir(root):
        print(f"sami manifests lint: {root}: not a directory", file=err)
        return EXIT_USAGE
    _, problems, manifests = _check(root, getattr(args, "stack_policy", "off"))
    if output == "json":
        json.dump(_report(root, problems, manifests), out, indent=2)
        out.write("\n")
    else:
        for problem in problems:
            print(problem.format(root), file=out)
        print(_summary(problems, manifests), file=err)
    return EXIT_PROBLEMS if any(p.is_error for p in problems) else EXIT_OK


# Sync


def run_sync(args: argparse.Namespace, ctx: Context) -> int:
    """Handler of `sami manifests sync`: lint locally, then upload."""
    root: str = args.dir
    console = ctx.console
    if not os.path.isdir(root):
        console.error(f"manifests sync: {root}: not a directory")
        return EXIT_USAGE
    given: str | None = None if args.commit is None else args.commit.strip().lower()
    if given and not _COMMIT.fullmatch(given):
        console.error(
            f"--commit {args.commit!r} is not a full commit sha: pass the 40 hex digits "
            "(`git rev-parse HEAD`), or --commit '' for none"
        )
        return EXIT_USAGE
    files, problems, manifests = _check(root)
    if any(p.is_error for p in problems):
        _refuse(root, problems, manifests, ctx)
        return EXIT_PROBLEMS
    commit = given if given is not None else default_commit(root, ctx.env, note=console.note)
    response = ctx.client().sync_manifests(files, commit)
    revision = response.revision
    if ctx.github:
        github_actions.write_outputs(ctx.env, {"manifest_revision": revision.id})
    if not ctx.json_output:
        for warning in revision.warnings:
            console.note(render.manifest_problem_line(warning, root))
        what = "created" if response.created else "already stored (the same files), now current:"
        from_commit = f"commit {render.short(revision.commit)}" if revision.commit else "no commit"
        if not response.created and commit and commit != revision.commit:
            # Content-addressed: the revision keeps the commit it was first synced from.
            from_commit += f", first synced from it; {render.short(commit)} has the same files"
        count = len(revision.entries)
        console.note(
            f"{what} manifest revision {render.short(revision.id)} ({from_commit}): "
            f"{count} manifest{'s' if count != 1 else ''}, {revision.file_count} files"
            + (
                f", {len(revision.warnings)} warning{'s' if len(revision.warnings) != 1 else ''}"
                if revision.warnings
                else ""
            )
        )
    # The id is the last line of stdout, for `rev=$(sami manifests sync DIR | tail -n1)`.
    ctx.show(revision.id, response)
    return int(ExitCode.SUCCEEDED)


def _refuse(
    root: str,
    problems: Sequence[Problem],
    manifests: Sequence[ResolvedManifest],
    ctx: Context,
) -> None:
    """Report lint errors that stop a sync: on stderr (stdout carries only the result), as a
    JSON report with --output json, and as annotations in GitHub Actions."""
    if ctx.json_output:
        ctx.console.print(render.to_json(_report(root, problems, manifests)))
    for problem in problems:
        ctx.console.note(problem.format(root))
    errors = sum(1 for p in problems if p.is_error)
    ctx.console.error(
        f"{_summary(problems, manifests)}: nothing was synced; fix the "
        f"error{'s' if errors != 1 else ''} above (`sami manifests lint {root}` checks "
        "again) and sync again"
    )
    if ctx.github:
        for problem in problems:
            if problem.is_error:
                github_actions.error(
                    ctx.annotation_stream,
                    f"{problem.message} — {problem.hint}" if problem.hint else problem.message,
                    "sami manifests",
                    file=os.path.normpath(os.path.join(root, problem.file)),
                    line=problem.line,
                )


def default_commit(root: str, env: Mapping[str, str], note: Any = None) -> str:
    """The commit `root` holds: git's HEAD when `root` is in a git checkout, else GITHUB_SHA,
    else "". `note(text)` is told when the files on disk differ from that commit."""
    head = _git(root, "rev-parse", "HEAD")
    if head is not None:
        commit = head.strip().lower()
        if not _COMMIT.fullmatch(commit):
            # A sha256 repository: sami-control records sha1 commits only.
            if note is not None:
                note(f"commit {commit[:12]} of {root} is not a 40-digit sha: not recorded")
            return ""
        changed = _git(root, "status", "--porcelain", "--", "services", "README.md")
        if changed and note is not None:
            note(
                f"{root} has uncommitted changes: the revision holds the files as they are "
                f"on disk, recorded as commit {commit[:12]}"
            )
        return commit
    sha = env.get("GITHUB_SHA", "").strip().lower()
    return sha if _COMMIT.fullmatch(sha) else ""


def _git(root: str, *args: str) -> str | None:
    """git's stdout, or None when git is missing or fails (not a checkout, no commit yet, a
    repository git refuses to read)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "-C", root, *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# List and show


def run_list(args: argparse.Namespace, ctx: Context) -> int:
    found = ctx.client().list_manifest_revisions(page_size=argtypes.page_size(args.limit))
    revisions = argtypes.take(found, args.limit)
    ctx.show(render.manifest_revisions_table(revisions), [render.to_dict(r) for r in revisions])
    return int(ExitCode.SUCCEEDED)


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    name = resolve_revision_name(client, args.name)
    # Files by name, size and hash: their content is not needed (nor readable by all).
    revision = client.get_manifest_revision(name)
    ctx.show(render.manifest_revision_detail(revision, files=args.files), revision)
    return int(ExitCode.SUCCEEDED)


def resolve_revision_name(client: SamiClient, name: str) -> str:
    """A full id for a short one (as `sami manifests list` shows), found among the synced
    revisions; other names are passed on as they are."""
    ident = name.strip().lower()
    if not _ID_PREFIX.fullmatch(ident):
        return name
    matches = [r.id for r in client.list_manifest_revisions() if r.id.startswith(ident)]
    if len(matches) > 1:
        raise SamiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{name!r} is the start of {len(matches)} revision ids",
            [("ID", "give more characters: " + ", ".join(render.short(m) for m in matches))],
        )
    return matches[0] if matches else name


# On its own


def build_parser() -> argparse.ArgumentParser:
    """A `sami` parser with only the `manifests` group (the full CLI is `sami_client.cli`)."""
    parser = CommandParser(prog="sami", description="Work with a deployments repo.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return execute(args)


if __name__ == "__main__":
    sys.exit(main())
