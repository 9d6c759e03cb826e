"""`sami manifests ...`: work with a deployments repo checkout.

`register(subparsers)` adds the `manifests` command group to the `sami` CLI; `main(argv)`
runs it on its own (`python -m sami_client.manifests_cmd manifests lint DIR`).

    sami manifests lint DIR [--output text|json]

prints one line per problem, `file:line: severity: message — hint`, and exits 1 when any
problem is an error, 0 otherwise (warnings are printed but do not fail); 2 when DIR cannot
be read as a directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from sami_control.manifests import (
    Problem,
    RepoReadError,
    ResolvedManifest,
    Severity,
    read_tree,
    scan,
)

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `manifests` (with `lint`) to the CLI's subparsers; returns the group's parser.

    Each leaf sets `func(args, ctx=None) -> int` (the exit status) as its default: the sami
    CLI calls handlers with (args, Context); linting needs no Context.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "manifests",
        help="check a deployments repo (services/<service>/<type>/<environment>/sami.yaml)",
        description="Work with a deployments repo checkout.",
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
    # The sami CLI's parser class already gives every command -o/--output.
    with contextlib.suppress(argparse.ArgumentError):
        lint_parser.add_argument(
            "-o",
            "--output",
            choices=("text", "json"),
            default="text",
            help="text: one `file:line: severity: message — hint` line per problem; json: a report",
        )
    lint_parser.set_defaults(func=run_lint)
    return parser


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
    manifests: tuple[ResolvedManifest, ...] = ()
    try:
        files = read_tree(root)
    except RepoReadError as exc:
        problems = list(exc.problems) or [
            Problem(Severity.ERROR, "", 0, exc.message, "", "unreadable")
        ]
    else:
        result = scan(files)
        problems = list(result.problems)
        manifests = result.manifests
    errors = sum(1 for p in problems if p.is_error)
    warnings = len(problems) - errors
    if output == "json":
        report = {
            "root": root,
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
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
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        for problem in problems:
            print(problem.format(root), file=out)
        summary = (
            f"{len(manifests)} manifest{'s' if len(manifests) != 1 else ''} valid, "
            f"{errors} error{'s' if errors != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}"
        )
        print(summary, file=err)
    return EXIT_PROBLEMS if errors else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sami", description="Sami deployments.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
