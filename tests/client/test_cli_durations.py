"""Every duration flag of `sami` reads one grammar: `90`, `90s`, `15m`, `1h30m`, `1d2h`."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest

from sami_client.cli import build_parser

from .fake_control import REF, FakeControl, FakeServer
from .test_cli_subprocess import _env


@pytest.mark.parametrize(
    ("argv", "field", "seconds"),
    [
        (["deploy", "web", "--env", "stage", "--artifact", REF, "--wait", "--timeout", "15m"],
         "timeout", 900),
        (["watch", "d1", "--timeout", "1h30m"], "timeout", 5400),
        (["rollback", "web", "--env", "stage", "--wait", "--timeout", "90"], "timeout", 90),
        (["promote", "web", "--from", "stage", "--to", "production", "--timeout", "90s"],
         "timeout", 90),
        (["teardown", "web", "--pr", "3", "--timeout", "2m"], "timeout", 120),
        (["token", "create", "--role", "reader", "--expires-in", "1d2h"], "expires_in", 93600),
        (["token", "create", "--role", "reader", "--expires-in", "3600"], "expires_in", 3600),
    ],
)  # fmt: skip
def test_duration_flags(argv: list[str], field: str, seconds: float) -> None:
    assert getattr(build_parser().parse_args(argv), field) == seconds


def test_since_is_a_duration_ago_or_a_time() -> None:
    before = datetime.datetime.now(datetime.UTC)
    since = build_parser().parse_args(["audit", "--since", "1d2h"]).since
    expected = before - datetime.timedelta(days=1, hours=2)
    assert abs((since - expected).total_seconds()) < 5
    iso = build_parser().parse_args(["audit", "--since", "2026-01-31T12:00"]).since
    assert iso == datetime.datetime(2026, 1, 31, 12, tzinfo=datetime.UTC)


def _sami(addr: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sami_client", *argv],
        capture_output=True,
        text=True,
        env=_env(addr),
        timeout=30,
    )


def test_a_bad_duration_exits_2_naming_it(server: FakeServer) -> None:
    done = _sami(server.addr, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait",
                 "--timeout", "1m30x")  # fmt: skip
    assert done.returncode == 2
    assert "argument --timeout: '1m30x' is not a duration" in done.stderr
    assert "e.g. 90, 90s, 15m, 1h30m, 1d2h" in done.stderr
    done = _sami(server.addr, "audit", "--since", "soon")
    assert done.returncode == 2
    assert "'soon' is neither a duration ago" in done.stderr


def test_wait_timeout_with_units(server: FakeServer, control: FakeControl) -> None:
    control.release_on_create = 3  # The deployment never gets further.
    done = _sami(server.addr, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait",
                 "--timeout", "1s")  # fmt: skip
    assert done.returncode == 3
    assert "timed out after 1s waiting for deployment d1" in done.stderr
