"""The agent's age key: `sami-agent keygen`, loading it at start, sending its recipient."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pyrage
import pytest
import structlog
from agent_fakes import ScriptedExecutor, running_agent

from sami_agent import cli
from sami_agent.keys import KeyFileError, generate_key_file, load_key_file

AGE = shutil.which("age")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_private_key_file_and_prints_its_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state" / "sami-agent" / "age-key.txt"

    assert cli.main(["keygen", "--key-file", str(path)]) == 0

    recipient = capsys.readouterr().out.strip()
    assert recipient.startswith("age1")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    key = load_key_file(str(path))
    assert key.recipient == recipient
    assert key.decrypt(pyrage.encrypt(b"s3cret", [pyrage.x25519.Recipient.from_str(recipient)]))
    assert [p.name for p in path.parent.iterdir()] == ["age-key.txt"]  # no temporary left
    assert "identities" not in repr(key)  # nothing of the private key in a log line


def test_keygen_refuses_to_replace_a_key_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "age-key.txt"
    assert cli.main(["keygen", "--key-file", str(path)]) == 0
    first = capsys.readouterr().out.strip()

    assert cli.main(["keygen", "--key-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path} already exists" in err and "--force" in err
    assert load_key_file(str(path)).recipient == first

    assert cli.main(["keygen", "--key-file", str(path), "--force"]) == 0
    second = capsys.readouterr().out.strip()
    assert second != first
    assert load_key_file(str(path)).recipient == second
    assert mode(path) == 0o600


def test_keygen_takes_the_path_from_sami_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "from-env.txt"
    monkeypatch.setenv("SAMI_KEY_FILE", str(path))
    assert cli.main(["keygen"]) == 0
    assert load_key_file(str(path)).recipient == capsys.readouterr().out.strip()


def test_a_key_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    path = tmp_path / "age-key.txt"
    generate_key_file(str(path))
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        load_key_file(str(path))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"# only a comment\n",
        b"AGE-SECRET-KEY-1NOTAKEY\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
        b"\xff\xfe binary",
    ],
)
def test_a_file_that_is_not_an_age_identity_is_refused_naming_it(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "key.txt"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        load_key_file(str(path))
    message = str(caught.value)
    assert str(path) in message and "not an age identity file" in message
    if content.startswith(b"AGE-SECRET"):
        assert "NOTAKEY" not in message  # a key with a typo is not echoed into the logs


@pytest.mark.skipif(AGE is None, reason="the age command line is not installed")
def test_the_key_file_works_with_the_age_command_line(tmp_path: Path) -> None:
    assert AGE is not None
    path = tmp_path / "age-key.txt"
    key = generate_key_file(str(path))
    # age encrypts (armored) to the recipient: the agent opens it.
    armored = subprocess.run(
        [AGE, "-a", "-r", key.recipient], input=b"from age", capture_output=True, check=True
    ).stdout
    assert key.decrypt(armored) == b"from age"
    # pyrage encrypts: age opens it with the agent's key file as identity.
    ciphertext = pyrage.encrypt(b"from pyrage", [pyrage.x25519.Recipient.from_str(key.recipient)])
    opened = subprocess.run(
        [AGE, "-d", "-i", str(path)], input=ciphertext, capture_output=True, check=True
    ).stdout
    assert opened == b"from pyrage"


def _args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(**{"dry_run": False, "key_file": None, **values})


def test_the_agent_creates_its_missing_key_and_logs_the_recipient(tmp_path: Path) -> None:
    path = tmp_path / "new" / "age-key.txt"
    with structlog.testing.capture_logs() as logs:
        key = cli.agent_key(_args(key_file=str(path)))
    assert key is not None and mode(path) == 0o600
    created = [line for line in logs if line["event"] == "agent_key_created"]
    assert created and created[0]["recipient"] == key.recipient
    assert "AGE-SECRET-KEY" not in repr(logs)
    # The next start loads the same key.
    again = cli.agent_key(_args(key_file=str(path)))
    assert again is not None and again.recipient == key.recipient


def test_an_unusable_key_stops_the_agent_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "age-key.txt"
    path.write_text("not a key\n")
    os.chmod(path, 0o644)
    monkeypatch.setattr(cli.logs, "configure", lambda: None)
    monkeypatch.setenv("SAMI_TOKEN", "t")
    with structlog.testing.capture_logs() as logs:
        assert cli.main(["--key-file", str(path), "--control", "127.0.0.1:1"]) == 2
    refused = [line for line in logs if line["event"] == "agent_refused_to_start"]
    assert refused and f"chmod 600 {path}" in refused[0]["message"]


def test_a_dry_run_agent_uses_a_key_only_when_given_one(tmp_path: Path) -> None:
    assert cli.agent_key(_args(dry_run=True)) is None
    key = cli.agent_key(_args(dry_run=True, key_file=str(tmp_path / "k.txt")))
    assert key is not None


def test_hello_carries_the_agent_recipient(tmp_path: Path) -> None:
    key = generate_key_file(str(tmp_path / "age-key.txt"))

    async def scenario() -> None:
        async with running_agent(ScriptedExecutor(), recipient=key.recipient) as (control, _, _):
            stream = await control.next_stream()
            first = await stream.recv()
            assert first.hello.recipient == key.recipient

    asyncio.run(scenario())


def test_the_default_key_file_is_in_the_agent_state_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sami_agent.keys import default_key_file

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_key_file({"XDG_STATE_HOME": "/st"}) == "/st/sami-agent/age-key.txt"
    assert default_key_file({}).endswith("/.local/state/sami-agent/age-key.txt")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_key_file({}) == "/var/lib/sami-agent/age-key.txt"


def test_keygen_to_stdout_writes_the_key_there_and_the_recipient_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # For `sami-agent keygen --key-file - | docker secret create sami-agent-key -`.
    assert cli.main(["keygen", "--key-file", "-"]) == 0
    out, err = capsys.readouterr()
    path = tmp_path / "from-stdout.txt"
    path.write_text(out)
    path.chmod(0o600)
    key = load_key_file(str(path))
    assert err.strip() == f"sami-agent keygen: recipient {key.recipient}"
    assert "AGE-SECRET-KEY" not in err
