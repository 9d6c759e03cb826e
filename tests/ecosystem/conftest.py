"""Fixtures for the tests of what sits around Sami: the GitHub Action and its example
workflows, the container image and the Swarm stack that runs Sami itself."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# The real control plane in a thread of this process (tests/control/conftest.py).
from tests.control.conftest import live_server  # noqa: F401

from .gha import REPO

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite may itself run in GitHub Actions, or where SAMI_* point at a real server.
    for name in list(os.environ):
        if name.startswith(("SAMI_", "GITHUB_", "RUNNER_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _server_logs_apart() -> Iterator[None]:
    """The in-process server logs through structlog, to stdout by default: keep its lines
    out of the test's output."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()))
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture
def sami_bin() -> Path:
    """This checkout's `sami` (installed editable in the venv running the tests)."""
    path = VENV_BIN / "sami"
    if not path.exists():
        found = shutil.which("sami")
        assert found, "the sami console script is not installed: make venv"
        path = Path(found)
    return path


def start_dry_run_agent(addr: str, token: str, log: Path) -> subprocess.Popen[bytes]:
    """A real `sami-agent --dry-run` process (no engine needed), stopped by pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAMI_", "GITHUB_"))}
    env.update(SAMI_TOKEN=token, SAMI_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sami_agent",
                "--control",
                addr,
                "--agent-id",
                "eco-agent",
                "--dry-run",
                "--dry-run-step-seconds",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
