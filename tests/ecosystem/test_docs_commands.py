"""The command lines that the new docs, examples and deploy files tell people to type parse
with the programs' own parsers (so a renamed option breaks this test, not a reader's
bootstrap), and the backup one-liner of docs/sami-on-swarm.md really backs up a live
database."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sami_agent import cli as agent_cli
from sami_client.cli import build_parser
from sami_control import cli as control_cli
from tests.control.conftest import LiveServer
from tests.harness import PY, Proc, base_env, free_port

from .gha import REPO

DOCS = [
    REPO / "README.md",
    REPO / "docs" / "github-actions.md",
    REPO / "docs" / "sami-on-swarm.md",
    REPO / "docs" / "high-availability.md",
    REPO / "docs" / "postgresql.md",
    REPO / "docs" / "notifications.md",
    REPO / "docs" / "secrets.md",
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
    assert programs == {"sami", "sami-control", "sami-agent"}, programs
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


def documented(program: str, subcommand: str) -> list[str]:
    """The argv of the one `program subcommand ...` line of docs/sami-on-swarm.md."""
    doc = REPO / "docs" / "sami-on-swarm.md"
    (argv,) = [
        argv
        for line in code_lines(doc)
        for prog, argv in commands(line)
        if prog == program and argv[:1] == [subcommand]
    ]
    return argv


def control(argv: list[str], data: Path, backups: Path) -> subprocess.CompletedProcess[str]:
    """Run a documented sami-control line with the container's /data and /backups mapped
    to folders of this test."""
    mapped = [str(data) if a == "/data" else a.replace("/backups/", f"{backups}/") for a in argv]
    return subprocess.run(
        [sys.executable, "-m", "sami_control", *mapped],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_the_documented_backup_and_restore_run(live_server: LiveServer, tmp_path: Path) -> None:
    """docs/sami-on-swarm.md's `sami-control backup` while the control plane runs and
    writes, then its `sami-control restore` into a stopped control plane's folder."""
    backups = tmp_path / "backups"
    backups.mkdir()
    live_server.token("deployer")  # something in the database
    backup = documented("sami-control", "backup")
    done = control(backup, live_server.data, backups)
    assert done.returncode == 0, done.stderr
    (copy,) = backups.glob("sami-*.db")
    db = sqlite3.connect(copy)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] >= 1
    finally:
        db.close()

    restore = documented("sami-control", "restore")
    copy.rename(backups / "sami-2025-01-31-0300.db")
    target = tmp_path / "restored"
    first = control(restore, target, backups)
    assert first.returncode == 0, first.stderr
    # Nothing was there before: the command does not claim it kept a previous database.
    assert first.stdout.endswith("there was no database before it\n"), first.stdout
    assert not (target / "sami.db.before-restore").exists()
    again = control(restore, target, backups)
    assert again.returncode == 0, again.stderr
    kept = target / "sami.db.before-restore"
    assert again.stdout.endswith(f"the previous database is kept as {kept}\n")
    assert kept.exists()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if not re.match(r"\w+://", target):
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def readme_section(title: str) -> list[tuple[str, list[str]]]:
    """(program, argv) of every Sami command in the fenced sh blocks of one README section."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            found += commands(line.strip())
    return found


def test_the_readme_use_it_deploys_an_example_on_loopback(tmp_path: Path) -> None:
    """README.md "Use it", line by line on loopback: the offline set-up, the server, the CI
    commands against the example deployments repo (a dry-run agent stands in for the TLS
    agent line, the one that needs a swarm manager and certificates)."""
    data = str(tmp_path / "data")
    port = str(free_port())
    digest = "ab" * 32
    tokens: dict[str, str] = {}
    server: Proc | None = None
    agent: Proc | None = None
    ci: list[list[str]] = []
    try:
        for program, argv in readme_section("Use it"):
            argv = [
                a.replace("/var/lib/sami", data)
                .replace("127.0.0.1:7443", f"127.0.0.1:{port}")
                .replace("PLACEHOLDER-digest", digest)
                for a in argv
            ]
            if program == "sami-control" and argv[0] in ("cluster", "token"):
                done = subprocess.run(
                    [PY, "-m", "sami_control", *argv],
                    capture_output=True,
                    text=True,
                    env=base_env(),
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 0, (argv, done.stderr)
                if argv[0] == "token":
                    tokens[argv[argv.index("--role") + 1]] = done.stdout.splitlines()[-1]
            elif (
                program == "sami-control"
                and argv[0] == "serve"
                and "--tls-cert" not in argv
                and server is None
            ):
                # The first plain serve line; later ones (the dashboard's) only vary it, and
                # starting them too would leave a second server that nothing stops.
                server = Proc(
                    [PY, "-m", "sami_control", *argv], tmp_path / "control.log", env=base_env()
                ).start()
            elif program == "sami":
                ci.append(argv)
        assert server is not None and set(tokens) == {"agent", "deployer"}, tokens
        dry_run = ["--dry-run", "--dry-run-step-seconds", "0.02"]
        agent = Proc(
            [
                PY,
                "-m",
                "sami_agent",
                "--control",
                f"127.0.0.1:{port}",
                "--agent-id",
                "a1",
                *dry_run,
            ],
            tmp_path / "agent.log",
            env=base_env(SAMI_TOKEN=tokens["agent"]),
        ).start()
        assert [argv[0] for argv in ci] == ["manifests", "artifact", "deploy"], ci
        env = base_env(SAMI_ADDR=f"127.0.0.1:{port}", SAMI_TOKEN=tokens["deployer"])
        for argv in ci:
            done = _sami_with_retry(argv, env)
            assert done.returncode == 0, (argv, done.stdout, done.stderr, server.log())
        # The example pins cluster osscameroon: the README created that one.
        assert "SUCCEEDED: deployment" in done.stdout and "camerdevs -> stage" in done.stdout
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.kill(signal.SIGTERM)


def _sami_with_retry(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sami ARGV` from the repo root; retried while the server is still starting (exit 3)."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(
            [PY, "-m", "sami_client", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        if done.returncode != 3 or time.monotonic() > deadline:
            return done
        time.sleep(0.3)
