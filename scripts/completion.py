"""Write the shell completion scripts of `sami` (sami_client/completion/) from its parser.

    python scripts/completion.py            # `make completion`: write them
    python scripts/completion.py --check    # exit 1 when the committed ones are stale

shtab is a development dependency: the scripts are committed and shipped as package data,
so `sami` itself never imports it (`sami completion SHELL` prints the files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import shtab

from sami_client.cli import build_parser
from sami_client.completion_cmd import SCRIPTS

OUT = Path(__file__).resolve().parent.parent / "sami_client" / "completion"

# Arguments that name files or directories: complete them as paths.
_FILES = {"ca"}
_DIRECTORIES = {"dir"}


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if action.dest in _FILES:
            action.complete = shtab.FILE
        elif action.dest in _DIRECTORIES:
            action.complete = shtab.DIRECTORY
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub)


def generate(shell: str) -> str:
    parser = build_parser()
    _mark_paths(parser)
    return shtab.complete(parser, shell)


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for shell, name in SCRIPTS.items():
        path = OUT / name
        text = generate(shell)
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, "utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}: run 'make completion' and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
