"""The one duration grammar (sami_common.durations), as flags and manifests read it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sami_common.durations import DurationError, format_seconds, parse_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("0", 0),
        ("0.5", 0.5),
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("1d2h", 93600),
        ("2w", 14 * 86400),
        ("1h0m5s", 3605),
        ("1.5h", 5400),
        (" 10m ", 600),
    ],
)
def test_accepted(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "s", "-5", "1m1h", "1h1h", "1h 30m", "90x", "1M", "1:30", "ten", "1e3"]
)
def test_refused_with_the_value_and_examples(text: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_seconds(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "90, 90s, 15m, 1h30m, 1d2h" in message
    assert isinstance(caught.value, ValueError)  # Callers that know only ValueError catch it.


@pytest.mark.parametrize(
    ("seconds", "text"), [(1800, "30m"), (5400, "1h30m"), (93600, "1d2h"), (0.5, "0.5s")]
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert parse_seconds(text) == seconds


def test_sami_control_expires_in_reads_the_same_grammar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sami_control import offline

    def create(expires_in: str) -> subprocess.CompletedProcess[str]:
        argv = ["token", "create", "--role", "admin", "--data", str(tmp_path)]
        return subprocess.run(
            [sys.executable, "-m", "sami_control", *argv, "--expires-in", expires_in],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert create("1d2h").returncode == 0
    (token,) = offline.list_tokens(tmp_path)
    assert token.expires_at - token.created_at == pytest.approx(93600, abs=2)
    refused = create("1d2x")
    assert refused.returncode == 2 and "'1d2x' is not a duration" in refused.stderr
