"""The `sami-agent` process: a dry-run deployment end to end, SIGTERM, and usage errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import structlog
from agent_fakes import TOKEN, WAIT, FakeControl, assignment, connect, start_server

from sami.v1 import agent_pb2
from sami_agent import cli

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    # Run this checkout's code, whether or not it is installed in the interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SAMI_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def test_agent_process_runs_a_dry_run_deployment_and_stops_on_sigterm(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"

    async def scenario() -> None:
        control = FakeControl()
        server, port = await start_server(control)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sami_agent",
            "--control",
            f"127.0.0.1:{port}",
            "--agent-id",
            "vps-1",
            "--dry-run",
            "--dry-run-step-seconds",
            "0.01",
            "--ledger",
            str(ledger),
            cwd=REPO,
            env=agent_env(SAMI_TOKEN=TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stream, hello = await connect(control)
            assert hello.agent_id == "vps-1"
            assert "dry-run" in hello.capabilities
            assert stream.metadata["authorization"] == f"Bearer {TOKEN}"
            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            while (message := await stream.recv()).WhichOneof("msg") == "progress":
                pass
            assert message.result.outcome == agent_pb2.OUTCOME_SUCCEEDED
            stream.send(done=agent_pb2.Done(deployment_id="d1", lease_id="l1"))

            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), WAIT)
            assert proc.returncode == 0, stderr.decode()
            await stream.wait_agent_gone()  # the stream was closed, not left to time out
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await server.stop(None)
        lines = [json.loads(line) for line in stderr.decode().splitlines()]
        job_lines = [line for line in lines if line.get("lease_id") == "l1"]
        assert job_lines
        for line in job_lines:
            assert (line["deployment_id"], line["service"], line["environment"]) == (
                "d1",
                "web",
                "stage",
            )
            assert line["cluster"] == "local"

    asyncio.run(scenario())
    [record] = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert (record["deployment_id"], record["agent_id"]) == ("d1", "vps-1")


def test_missing_token_exits_2_with_a_message() -> None:
    async def scenario() -> tuple[int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sami_agent",
            "--dry-run",
            cwd=REPO,
            env=agent_env(),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode, stderr.decode()

    code, stderr = asyncio.run(scenario())
    assert code == 2
    assert "no agent token: set SAMI_TOKEN" in stderr


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMI_TOKEN", TOKEN)
    # main() configures structlog globally, onto a stream capsys closes after this test;
    # unconfigured, its error line goes to stdout. An earlier test of this process may have
    # configured it onto a stream of its own: start from the defaults.
    monkeypatch.setattr(cli.logs, "configure", lambda: None)
    structlog.reset_defaults()
    assert cli.main(["--ledger", str(tmp_path / "l"), "--control", "127.0.0.1:1"]) == 2
    assert "--ledger records dry-run applies only" in _said(capsys)
    assert cli.main(["--dry-run", "--token-file", str(tmp_path / "nope")]) == 2
    assert "cannot read the token file" in _said(capsys)
    (tmp_path / "empty").write_text("\n")
    assert cli.main(["--dry-run", "--token-file", str(tmp_path / "empty")]) == 2
    assert "is empty" in _said(capsys)
    assert cli.main(["--dry-run", "--control", "127.0.0.1:7443,,127.0.0.2:7443"]) == 2
    assert "--control (or SAMI_ADDR): '127.0.0.1:7443,,127.0.0.2:7443': entry 2 is empty" in (
        _said(capsys)
    )
    monkeypatch.setenv("SAMI_ADDR", "127.0.0.1:7443,control.example")
    assert cli.main(["--dry-run"]) == 2
    assert "'control.example' has no port: write it as HOST:PORT" in _said(capsys)


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    """What main() logged or printed (its error is a log line: stderr once configured)."""
    captured = capsys.readouterr()
    return captured.out + captured.err
