"""The command lines that the new docs, examples and deploy files tell people to type parse
with the programs' own parsers (so a renamed option breaks this test, not a reader's
bootstrap), and the backup one-liner of docs/sami-on-swarm.md really backs up a live
database."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sami_agent import cli as agent_cli
from sami_client.cli import build_parser
from sami_control import cli as control_cli
from tests.control.conftest import LiveServer

from .gha import REPO

DOCS = [
    REPO / "docs" / "github-actions.md",
    REPO / "docs" / "sami-on-swarm.md",
    REPO / "examples" / "github" / "README.md",
]
COMMENTED = [
    *sorted((REPO / "examples" / "github").rglob("*.yml")),
    *sorted((REPO / "deploy").glob("*.yml")),
    *sorted((REPO / "deploy").glob("*.example")),
    REPO / "deploy" / "Dockerfile",
    REPO / "action.yml",
]
PROGRAMS: dict[str, Callable[[list[str]], object]] = {
    "sami": lambda argv: build_parser().parse_args(argv),
    "sami-control": lambda argv: control_cli._parser().parse_args(argv),
    "sami-agent": lambda argv: agent_cli.parse_args(argv),
}


def code_lines(path: Path) -> list[str]:
    """Shell lines of the fenced `sh` blocks (continuations joined), or of `#` comments."""
    text = path.read_text()
    if path.suffix == ".md":
        blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    else:
        blocks = ["\n".join(m for m in re.findall(r"^\s*#\s?(.*)$", text, re.M))]
    lines = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


def commands(line: str) -> list[tuple[str, list[str]]]:
    """(program, argv) of each Sami program the line runs, e.g. behind `docker run ... IMAGE`
    or `VAR=x`, up to a pipe, `&&` or a redirection."""
    # Placeholders (`<artifact-id>`) are words, not redirections.
    line = re.sub(r"<([\w-]+)>", r"PLACEHOLDER-\1", line.split(" # ")[0])
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        return []
    found = []
    command: list[str] = []
    for word in [*words, ";"]:
        if word in ("|", "||", "&&", ";", ">", ">>", "<", "&"):
            for i, w in enumerate(command):
                if w in PROGRAMS and (
                    i == 0 or command[i - 1] in ("IMAGE",) or "=" in command[i - 1]
                ):
                    found.append((w, command[i + 1 :]))
                    break
            command = []
        else:
            command.append(word)
    return found


def all_commands() -> list[tuple[str, str, list[str]]]:
    return [
        (str(path.relative_to(REPO)), program, argv)
        for path in [*DOCS, *COMMENTED]
        for line in code_lines(path)
        for program, argv in commands(line)
    ]


def test_documented_command_lines_parse() -> None:
    found = all_commands()
    programs = {program for _, program, _ in found}
    assert programs == {"sami", "sami-control"}, programs
    assert len(found) >= 15
    failures = []
    for where, program, argv in found:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                PROGRAMS[program](argv)
        except SystemExit as exit_:
            if exit_.code:
                failures.append(f"{where}: {program} {shlex.join(argv)}: {err.getvalue().strip()}")
    assert not failures, "\n".join(failures)


def test_the_documented_backup_copies_a_live_database(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """docs/sami-on-swarm.md's backup command (its `python -c` part, on the live server's
    data folder instead of /data) while the control plane runs and writes."""
    doc = (REPO / "docs" / "sami-on-swarm.md").read_text()
    (line,) = [
        line for line in doc.splitlines() if line.startswith("docker run") and "backup(" in line
    ]
    words = shlex.split(line.split(" > ")[0])
    code = words[words.index("-c") + 1].replace("/data/", f"{live_server.data}/")
    live_server.token("deployer")  # something in the database
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    backup = tmp_path / "backup.db"
    backup.write_bytes(proc.stdout)
    db = sqlite3.connect(backup)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "tokens" in tables
        assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] >= 1
    finally:
        db.close()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if not re.match(r"\w+://", target):
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
