"""`sami completion bash|zsh`: print the shell completion script for `sami`.

The scripts are generated from the CLI's parser by `make completion` (with shtab, a
development tool: nothing is generated at run time) and shipped in sami_client/completion/;
a test fails when they no longer match the parser.

    source <(sami completion bash)                      # this shell
    sami completion bash > ~/.local/share/bash-completion/completions/sami
    sami completion zsh > "${fpath[1]}/_sami"           # zsh: a file named _sami on $fpath

`register(subparsers)` adds the command to the `sami` CLI.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from sami_client.context import Subparsers
from sami_client.errors import ExitCode

# The file of each shell's script in sami_client/completion/.
SCRIPTS = {"bash": "sami.bash", "zsh": "_sami"}


def script(shell: str) -> str:
    """The committed completion script for `shell`."""
    return (resources.files("sami_client") / "completion" / SCRIPTS[shell]).read_text("utf-8")


def register(commands: Subparsers) -> None:
    p = commands.add_parser(
        "completion",
        help="print the shell completion script (bash or zsh)",
        description="Print the completion script for SHELL. bash: `source <(sami completion "
        "bash)`, or save it as ~/.local/share/bash-completion/completions/sami. zsh: save it "
        'as a file named _sami in a directory of $fpath, e.g. `sami completion zsh > "${fpath[1]}'
        '/_sami"`, then start a new shell.',
    )
    p.add_argument("shell", choices=sorted(SCRIPTS), metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    sys.stdout.flush()
    return int(ExitCode.SUCCEEDED)
