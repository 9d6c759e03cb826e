from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import structlog

from sami_client.cli import main

# The real control plane in a thread of this process, for the tests that need its
# behaviour rather than the fake's (tests/client/test_cli_manifests.py).
from tests.control.conftest import live_server  # noqa: F401

from .cli_result import Result
from .fake_control import ADMIN_TOKEN, FakeControl, FakeServer


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite may itself run in GitHub Actions, or where SAMI_* point at a real server.
    for name in list(os.environ):
        if name.startswith(("SAMI_", "GITHUB_")):
            monkeypatch.delenv(name)


class _CurrentStderr:
    """sys.stderr as it is when written to (capsys swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _server_logs_on_stderr() -> Iterator[None]:
    """A control plane in this process (live_server) logs on stderr, as `sami-control
    serve` does: on stdout (structlog's default, unconfigured) a line it logs during a CLI
    call would be read as the CLI's output (a `memory_trimmed` line once was)."""
    before = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()))
    yield
    structlog.configure(**before)


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def server(control: FakeControl, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = FakeServer(control)
    fake.start()
    monkeypatch.setenv("SAMI_ADDR", fake.addr)
    monkeypatch.setenv("SAMI_TOKEN", ADMIN_TOKEN)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sami(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in-process: sami("deploy", "web", ...) -> Result."""

    def run(*argv: str) -> Result:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run a function in a thread (e.g. to restart the server while the CLI waits); its
    failure fails the test, and it is always joined."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def start(fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except BaseException as err:  # Re-raised by the fixture after the test.
                errors.append(err)

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=15)
        assert not thread.is_alive(), "background thread did not finish"
    if errors:
        raise errors[0]
