"""`sami --version`, `sami version`, `sami-control --version`, `sami-agent --version`, and
the shell completion scripts `sami completion bash|zsh` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sami_common.version import VERSION
from tests.control.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def _run(
    *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))},
        **(env or {}),
    }
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=60, input=stdin, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("module", "name"),
    [("sami_client", "sami"), ("sami_control", "sami-control"), ("sami_agent", "sami-agent")],
)
def test_version_flag(module: str, name: str) -> None:
    done = _run(sys.executable, "-m", module, "--version")
    assert (done.returncode, done.stdout) == (0, f"{name} {VERSION}\n")


def test_version_command_names_client_and_server(live_server: LiveServer) -> None:
    env = {"SAMI_ADDR": live_server.addr, "SAMI_TOKEN": live_server.token("reader")}
    done = _run(sys.executable, "-m", "sami_client", "version", env=env)
    assert (done.returncode, done.stdout.splitlines()) == (
        0,
        [f"sami {VERSION}", f"sami-control {VERSION} (sqlite)"],
    )
    done = _run(sys.executable, "-m", "sami_client", "version", "-o", "json", env=env)
    assert json.loads(done.stdout) == {"client": VERSION, "server": VERSION, "store": "sqlite"}


def test_version_without_a_server_still_names_the_client() -> None:
    """Nothing listens there: the client's version, why the server's is missing, exit 3."""
    env = {"SAMI_ADDR": "127.0.0.1:9", "SAMI_TOKEN": "sami_000000000000_" + "x" * 43}
    done = _run(sys.executable, "-m", "sami_client", "version", env=env)
    lines = done.stdout.splitlines()
    assert done.returncode == 3 and lines[0] == f"sami {VERSION}"
    assert lines[1].startswith("sami-control: version not known (")


def test_completion_scripts_are_fresh() -> None:
    done = _run(sys.executable, "scripts/completion.py", "--check")
    assert done.returncode == 0, done.stderr + "\n(run `make completion` and commit)"


@pytest.mark.parametrize(("shell", "name"), [("bash", "sami.bash"), ("zsh", "_sami")])
def test_completion_prints_the_shipped_script(shell: str, name: str) -> None:
    done = _run(sys.executable, "-m", "sami_client", "completion", shell)
    assert done.returncode == 0
    assert done.stdout == (ROOT / "sami_client" / "completion" / name).read_text()


def test_unknown_shell_is_a_usage_error() -> None:
    done = _run(sys.executable, "-m", "sami_client", "completion", "fish")
    assert done.returncode == 2 and "invalid choice: 'fish'" in done.stderr


def _complete(line: str) -> list[str]:
    """What bash offers for `line` (the cursor at its end) with `sami completion bash`."""
    words = line.split(" ")
    script = (
        f'source <("{sys.executable}" -m sami_client completion bash)\n'
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={line!r}\nCOMP_POINT={len(line)}\n"
        "_shtab_sami sami\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = _run("bash", "--norc", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_and_options() -> None:
    assert _complete("sami dep") == ["deploy"]
    assert _complete("sami deploy --ti") == ["--timeout"]
    assert "completion" in _complete("sami c")
    assert set(_complete("sami completion ")) == {"bash", "zsh"}


def test_an_expired_token_is_called_expired(live_server: LiveServer) -> None:
    """What a CI job sees when its token ran out: the word the server uses, not a guess."""
    from sami_control import offline

    expired = offline.add_token(live_server.data, "reader", "short", expires_in="1s")
    time.sleep(1.2)
    env = {"SAMI_ADDR": live_server.addr, "SAMI_TOKEN": expired.plaintext}
    done = _run(sys.executable, "-m", "sami_client", "list", env=env)
    assert done.returncode == 3
    assert f"token {expired.record.id} (short) has expired" in done.stderr
    assert "set SAMI_TOKEN to a valid token: this one has expired" in done.stderr
    assert "unknown" not in done.stderr
