"""The agent's metrics, driven by a scripted control plane: connection state, reconnects,
heartbeats, jobs by outcome and their duration; and `--metrics-listen` usage errors."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from agent_fakes import ScriptedExecutor, assignment, connect, running_agent

from sami_agent import cli, package_version
from sami_agent.executor import Outcome
from sami_agent.metrics import AgentMetrics

pytestmark = pytest.mark.timeout(30)


def sample(m: AgentMetrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_connection_heartbeats_jobs_and_reconnects() -> None:
    async def scenario() -> None:
        executor = ScriptedExecutor(outcome=Outcome.ROLLED_BACK)
        metrics = AgentMetrics()
        async with running_agent(executor, metrics=metrics) as (control, _agent, _):
            assert (
                sample(metrics, "sami_agent_info", agent_id="agent-1", version=package_version())
                == 1
            )
            stream, _ = await connect(control, heartbeat=0.05)
            await until(lambda: sample(metrics, "sami_agent_connected") == 1)
            await until(lambda: sample(metrics, "sami_agent_last_heartbeat_timestamp_seconds") > 0)
            assert sample(metrics, "sami_agent_reconnects_total") == 0

            stream.send(assignment=assignment())
            await stream.recv_kind("ack")
            await until(lambda: sample(metrics, "sami_agent_jobs_running") == 1)
            executor.gate.set()
            await until(
                lambda: sample(metrics, "sami_agent_jobs_total", outcome="rolled_back") == 1
            )
            assert sample(metrics, "sami_agent_jobs_running") == 0
            count = "sami_agent_job_duration_seconds_count"
            assert sample(metrics, count, outcome="rolled_back") == 1

            stream.close(grpc.StatusCode.UNAVAILABLE, "going away")
            await until(lambda: sample(metrics, "sami_agent_connected") == 0)
            await connect(control, heartbeat=0.05)
            await until(lambda: sample(metrics, "sami_agent_connected") == 1)
            assert sample(metrics, "sami_agent_reconnects_total") == 1

    asyncio.run(scenario())


def test_two_agents_have_their_own_registries() -> None:
    a, b = AgentMetrics(), AgentMetrics()
    a.job_ended("succeeded", time.monotonic())
    assert sample(a, "sami_agent_jobs_total", outcome="succeeded") == 1
    assert sample(b, "sami_agent_jobs_total", outcome="succeeded") == 0


def test_a_bad_metrics_address_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMI_TOKEN", "t")
    # main() configures structlog globally, onto a stream capsys closes after this test;
    # unconfigured, its error line goes to stdout.
    monkeypatch.setattr(cli.logs, "configure", lambda: None)
    assert cli.main(["--dry-run", "--metrics-listen", "9465"]) == 2
    assert "--metrics-listen" in _said(capsys)


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    """What main() logged or printed (its error is a log line: stderr once configured)."""
    captured = capsys.readouterr()
    return captured.out + captured.err
