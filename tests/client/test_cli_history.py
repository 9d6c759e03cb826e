"""`sami history`, `rollback`, `promote` and `teardown` against the real control plane (in a
thread of this process, see tests/control/conftest.py) and a real agent: deployments reach
their end only through an agent, as in production.

Most tests run the agent in-process (fast) with the dry-run executor, made to fail the
digests a test names; the teardown test runs `python -m sami_agent --dry-run` as a process,
as an operator would."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from sami.v1 import artifact_pb2, deployment_pb2
from sami_agent.connection import Agent
from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter
from sami_agent.executors import DryRunExecutor
from sami_client.client import SamiClient
from sami_common.backoff import Backoff
from sami_common.dial import Endpoint
from tests import samples
from tests.control.conftest import LiveServer
from tests.harness import PY, Proc, base_env

from .cli_result import Result

pytestmark = pytest.mark.timeout(60)

Sami = Callable[..., Result]
Deployment = deployment_pb2.Deployment

REPO = "127.0.0.1:5000/{name}@sha256:{hex}"


def digest(char: str) -> str:
    return "sha256:" + char * 64


@pytest.fixture(autouse=True)
def _server_logs_apart() -> Iterator[io.StringIO]:
    """The in-process server and agent log through structlog, to stdout by default: keep
    their lines out of the CLI's captured stdout."""
    saved = structlog.get_config()
    sink = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
    try:
        yield sink
    finally:
        structlog.configure(**saved)


class ScriptedDryRun(DryRunExecutor):
    """The dry-run executor, failing the artifacts whose digest is in `failing`."""

    def __init__(self) -> None:
        super().__init__(step_seconds=0)
        self.failing: set[str] = set()

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        if job.artifact_digest in self.failing:
            report("converge", "web.1 failed: exit code 1")
            return ExecutionResult(Outcome.FAILED, "task web.1 failed: exit code 1")
        return super().execute(job, report, cancelled)


class InProcessAgent:
    """The real agent, run on the live server's event loop: one loop for both (grpc.aio
    does not like several loops in one process), while the executor works in a thread."""

    def __init__(self, server: LiveServer, token: str, executor: DryRunExecutor) -> None:
        self.loop = server.loop
        self.agent = Agent(
            Endpoint(addr=server.addr, token=token),
            executor,
            "a1",
            backoff=Backoff(base=0.05, cap=0.2),
        )
        self.running = asyncio.run_coroutine_threadsafe(self.agent.run(), self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.agent.stop)
        self.running.result(timeout=10)


@dataclass
class World:
    """A live control plane with a cluster serving every environment, the sample manifests
    (services web and api, previews allowed) synced through the client, an admin token in
    SAMI_ADDR/SAMI_TOKEN for the CLI, and a client for the test's own calls."""

    server: LiveServer
    client: SamiClient
    agent_token: str
    executor: ScriptedDryRun = field(default_factory=ScriptedDryRun)

    def artifact(self, char: str, name: str = "web") -> artifact_pb2.Artifact:
        ref = REPO.format(name=name, hex=char * 64)
        registered = self.client.register_artifact(
            artifact_pb2.Artifact(artifact_name=name, ref=ref, digest=digest(char))
        )
        return registered.artifact

    def ship(
        self,
        char: str,
        env: str = "stage",
        *,
        service: str = "web",
        pr: int = 0,
        fail: bool = False,
    ) -> Deployment:
        """Deploy the artifact `char` and wait for its end (FAILED when `fail`)."""
        art = self.artifact(char, service)
        if fail:
            self.executor.failing.add(art.digest)
        d = self.client.create_deployment(service, env, art.id, pull_request=pr)
        return self.wait(d.id)

    def wait(self, deployment_id: str) -> Deployment:
        for _ in self.client.watch(deployment_id, timeout=20):
            pass
        return self.client.get_deployment(deployment_id)

    def deployments(self, service: str = "web", env: str = "stage") -> list[Deployment]:
        return list(self.client.history(service, env))


@pytest.fixture
def world(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    admin = live_server.token("admin")
    monkeypatch.setenv("SAMI_ADDR", live_server.addr)
    monkeypatch.setenv("SAMI_TOKEN", admin)
    client = SamiClient(Endpoint(addr=live_server.addr, token=admin))
    try:
        client.create_cluster("main", ["stage", "production", "pull_request"])
        client.sync_manifests(samples.repo())
        yield World(live_server, client, live_server.token("agent", cluster="main"))
    finally:
        client.close()


@pytest.fixture
def agent(world: World) -> Iterator[World]:
    """`world` with the in-process agent serving cluster main."""
    running = InProcessAgent(world.server, world.agent_token, world.executor)
    try:
        yield world
    finally:
        running.stop()


def short(d: Deployment) -> str:
    return f"{d.artifact.artifact_name}@{d.artifact.digest[:19]}"


# history


def test_history_is_newest_first_and_marks_the_live_deployment(sami: Sami, agent: World) -> None:
    a = agent.ship("a")
    b = agent.ship("b")
    c = agent.ship("c", fail=True)
    other_env = agent.ship("d", "production")
    other_service = agent.ship("e", service="api")

    result = sami("history", "web", "--env", "stage")
    assert result.code == 0, result.err
    assert result.lines[0].split() == [
        "ID",
        "STATE",
        "ACTION",
        "ARTIFACT",
        "CREATED",
        "BY",
        "REASON",
        "/",
        "STATUS",
    ]
    lines = result.lines[1:]
    assert [line.split()[0] if line.startswith(" ") else line.split()[1] for line in lines] == [
        c.id,
        b.id,
        a.id,
    ]
    # Only B carries the live marker: C failed after it, so B still runs.
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1 and f"* {b.id}" in " ".join(marked[0].split())
    c_line = lines[0]
    assert "FAILED" in c_line and "deploy" in c_line and short(c) in c_line
    assert "task web.1 failed: exit code 1" in c_line  # why it ended there
    assert "SUCCEEDED" in lines[1] and short(b) in lines[1] and "t-admin" in lines[1]
    assert other_env.id not in result.out and other_service.id not in result.out

    shown = json.loads(sami("history", "web", "--env", "stage", "-o", "json").out)
    assert [(d["id"], d["live"], d["state"], d["action"]) for d in shown] == [
        (c.id, False, "FAILED", "deploy"),
        (b.id, True, "SUCCEEDED", "deploy"),
        (a.id, False, "SUCCEEDED", "deploy"),
    ]
    assert shown[1]["artifact"]["digest"] == digest("b")

    # The live deployment is older than the one shown: say which it is.
    limited = sami("history", "web", "--env", "stage", "--limit", "1")
    assert len(limited.lines) == 2 and c.id in limited.lines[1]
    assert f"live: {b.id} ({short(b)}), older than the 1 shown" in limited.err


def test_history_of_an_unknown_pair_or_with_a_misplaced_pr(sami: Sami, world: World) -> None:
    empty = sami("history", "web", "--env", "production")
    assert (empty.code, empty.out.strip()) == (0, "(none)")
    assert json.loads(sami("history", "web", "--env", "production", "-o", "json").out) == []
    misplaced = sami("history", "web", "--env", "stage", "--pr", "3")
    assert misplaced.code == 2 and "--pr goes with --env pull_request" in misplaced.err
    bad_env = sami("history", "web", "--env", "qa")
    assert bad_env.code == 2 and "environment" in bad_env.err


# rollback


def test_rollback_skips_the_live_digest_and_goes_further_back_when_repeated(
    sami: Sami, agent: World
) -> None:
    a = agent.ship("a")
    b = agent.ship("b")
    agent.ship("c")
    agent.ship("c")  # the same artifact again: rolling back from it must not land on C

    first = sami("rollback", "web", "--env", "stage", "--wait")
    assert first.code == 0, first.err
    assert f"rolling back web in stage to deployment {b.id} ({short(b)})" in first.err
    assert first.lines[-1].startswith("SUCCEEDED: deployment ")
    back_to_b = agent.deployments()[0]
    assert back_to_b.state == deployment_pb2.SUCCEEDED
    assert back_to_b.artifact.id == b.artifact.id and back_to_b.artifact.digest == digest("b")
    assert back_to_b.reason == f"rollback to {b.id}"

    # Live is now B again (by the rollback): the next rollback goes below B, to A, not
    # "back" to C.
    second = sami("rollback", "web", "--env", "stage", "--wait", "--reason", "still broken")
    assert second.code == 0, second.err
    back_to_a = agent.deployments()[0]
    assert back_to_a.artifact.id == a.artifact.id
    assert back_to_a.reason == f"rollback to {a.id}: still broken"
    assert back_to_a.id in sami("history", "web", "--env", "stage").lines[1]
    assert sami("history", "web", "--env", "stage").lines[1].startswith("*")

    # Nothing older than A.
    third = sami("rollback", "web", "--env", "stage")
    assert third.code == 2
    assert "nothing to roll back to" in third.err and short(a) in third.err
    assert agent.deployments()[0].id == back_to_a.id  # nothing was requested


def test_rollback_to_a_named_deployment(sami: Sami, agent: World) -> None:
    a = agent.ship("a")
    agent.ship("b")
    agent.ship("c")

    result = sami(
        "rollback", "web", "--env", "stage", "--to", a.id, "--reason", "bad release", "-o", "json"
    )
    assert result.code == 0, result.err
    requested = json.loads(result.out)
    assert requested["artifact"]["id"] == a.artifact.id
    assert requested["artifact"]["digest"] == digest("a")
    assert requested["reason"] == f"rollback to {a.id}: bad release"
    assert requested["service"] == "web" and requested["environment"] == "stage"
    assert requested["action"] == "deploy"
    assert agent.wait(requested["id"]).state == deployment_pb2.SUCCEEDED

    # Text output without --wait: the id, last on stdout, like `sami deploy`.
    again = sami("rollback", "web", "--env", "stage", "--to", a.id)
    assert again.code == 0, again.err
    assert again.lines[-1] == agent.deployments()[0].id
    assert f"follow it with `sami watch {again.lines[-1]}`" in again.err
    agent.wait(again.lines[-1])


def test_rollback_with_nothing_earlier_exits_2(sami: Sami, agent: World) -> None:
    nothing = sami("rollback", "web", "--env", "stage")
    assert nothing.code == 2
    assert "nothing to roll back: web in stage has no live deployment" in nothing.err

    agent.ship("a")
    agent.ship("b", fail=True)  # a failed deployment is no rollback target either
    only_one = sami("rollback", "web", "--env", "stage", "--wait")
    assert only_one.code == 2 and "nothing to roll back to" in only_one.err
    assert len(agent.deployments()) == 2


def test_rollback_to_a_failed_or_foreign_deployment_exits_2(sami: Sami, agent: World) -> None:
    agent.ship("a")
    failed = agent.ship("b", fail=True)
    assert failed.state == deployment_pb2.FAILED
    other_service = agent.ship("c", service="api")
    other_env = agent.ship("d", "production")
    count = len(agent.deployments())

    result = sami("rollback", "web", "--env", "stage", "--to", failed.id)
    assert result.code == 2
    assert f"deployment {failed.id} ended FAILED" in result.err
    assert "only a SUCCEEDED deployment can be rolled back to" in result.err

    for foreign in (other_service, other_env):
        result = sami("rollback", "web", "--env", "stage", "--to", foreign.id)
        assert result.code == 2
        assert f"deployment {foreign.id} is of {foreign.service} -> {foreign.environment}" in (
            result.err
        )
        assert "not of web in stage" in result.err

    unknown = sami("rollback", "web", "--env", "stage", "--to", "dep_0000000000000000")
    assert unknown.code == 2 and "NOT_FOUND" in unknown.err

    usage = sami("rollback", "web", "--env", "stage", "--timeout", "5")
    assert usage.code == 2 and "--timeout limits --wait" in usage.err
    assert len(agent.deployments()) == count
    assert len(agent.deployments("api")) == 1
    assert len(agent.deployments("web", "production")) == 1


def test_a_retried_rollback_with_a_request_id_follows_the_first_one(
    sami: Sami, agent: World
) -> None:
    a = agent.ship("a")
    agent.ship("b")
    args = ("rollback", "web", "--env", "stage", "--request-id", "ci-42", "--wait")
    first = sami(*args)
    assert first.code == 0, first.err
    # The rollback succeeded, so choosing again would pick another target; the retry
    # follows the deployment it already requested instead.
    retry = sami(*args)
    assert retry.code == 0, retry.err
    history = agent.deployments()
    assert len(history) == 3 and history[0].artifact.id == a.artifact.id


# promote


def test_promote_deploys_the_same_artifact_and_digest(sami: Sami, agent: World) -> None:
    agent.ship("a")
    b = agent.ship("b")
    agent.ship("c", fail=True)  # newer, but it did not succeed in stage
    agent.ship("d", "production")

    result = sami("promote", "web", "--from", "stage", "--to", "production", "--wait")
    assert result.code == 0, result.err
    assert f"promoting {short(b)} of web from stage (deployment {b.id}) to production" in (
        result.err
    )
    assert result.lines[-1].startswith("SUCCEEDED: deployment ")
    promoted = agent.deployments("web", "production")[0]
    assert promoted.state == deployment_pb2.SUCCEEDED
    assert promoted.artifact.id == b.artifact.id
    assert promoted.artifact.digest == b.artifact.digest == digest("b")
    assert promoted.artifact.ref == b.artifact.ref
    assert promoted.reason == f"promoted from stage ({b.id})"
    # Still one artifact per digest: nothing was registered again.
    assert [x.id for x in agent.client.list_artifacts("web") if x.digest == digest("b")] == [
        b.artifact.id
    ]

    as_json = sami(
        "promote", "web", "--from", "stage", "--to", "production", "--reason", "go", "-o", "json"
    )
    assert as_json.code == 0, as_json.err
    requested = json.loads(as_json.out)
    assert requested["artifact"]["id"] == b.artifact.id
    assert requested["reason"] == f"promoted from stage ({b.id}): go"
    agent.wait(requested["id"])


def test_promote_with_nothing_succeeded_exits_2(sami: Sami, agent: World) -> None:
    nothing = sami("promote", "web", "--from", "stage", "--to", "production")
    assert nothing.code == 2
    assert "nothing to promote: web has no SUCCEEDED deployment in stage" in nothing.err

    agent.ship("a", fail=True)
    failed_only = sami("promote", "web", "--from", "stage", "--to", "production", "--wait")
    assert failed_only.code == 2 and "nothing to promote" in failed_only.err
    assert agent.deployments("web", "production") == []

    same = sami("promote", "web", "--from", "stage", "--to", "stage")
    assert same.code == 2 and "--from and --to are both stage" in same.err


# teardown


@pytest.fixture
def agent_process(world: World, tmp_path: Path) -> Iterator[Proc]:
    """`python -m sami_agent --dry-run` serving cluster main, as an operator runs it."""
    proc = Proc(
        [
            PY,
            "-m",
            "sami_agent",
            "--control",
            world.server.addr,
            "--agent-id",
            "a1",
            "--dry-run",
            "--dry-run-step-seconds",
            "0.01",
        ],
        tmp_path / "agent.log",
        env=base_env(SAMI_TOKEN=world.agent_token),
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_teardown_waits_for_the_dry_run_agent_and_shows_in_the_history(
    sami: Sami, world: World, agent_process: Proc
) -> None:
    art = world.artifact("a")
    deployed = sami(
        "deploy", "web", "--env", "pull_request", "--pr", "5", "--artifact", art.id, "--wait"
    )
    assert deployed.code == 0, deployed.err + agent_process.log()
    preview = world.client.get_deployment(world.deployments("web", "pull_request")[0].id)
    assert preview.stack_name == "pr-5_web"

    result = sami("teardown", "web", "--pr", "5", "--reason", "PR closed", "--wait")
    assert result.code == 0, result.err + agent_process.log()
    teardown_id = world.deployments("web", "pull_request")[0].id
    assert result.lines[0].startswith(f"deployment {teardown_id}: teardown of pr-5_web, ")
    assert result.lines[-1].startswith(
        f"SUCCEEDED: deployment {teardown_id} (teardown of pr-5_web)"
    )
    torn = world.client.get_deployment(teardown_id)
    assert torn.action == deployment_pb2.TEARDOWN and torn.state == deployment_pb2.SUCCEEDED
    assert torn.reason == "PR closed"

    shown = json.loads(
        sami("history", "web", "--env", "pull_request", "--pr", "5", "-o", "json").out
    )
    assert [(d["id"], d["action"], d["live"]) for d in shown] == [
        (teardown_id, "teardown", False),
        (preview.id, "deploy", False),  # torn down: nothing is live
    ]
    text = sami("history", "web", "--env", "pull_request")
    assert "teardown" in text.lines[1] and "#5" in text.lines[1]
    assert not any(line.startswith("*") for line in text.lines)
    assert "(teardown of pr-5_web)" in sami("list", "--service", "web").out
    assert "action       teardown" in sami("get", teardown_id).out

    # Nothing to tear down twice, and nothing live to roll back from.
    again = sami("teardown", "web", "--pr", "5")
    assert again.code == 2 and "already torn down" in again.err
    rollback = sami("rollback", "web", "--env", "pull_request", "--pr", "5")
    assert rollback.code == 2 and "or its preview was torn down" in rollback.err


def test_teardown_without_wait_prints_the_id(sami: Sami, agent: World) -> None:
    agent.ship("a", "pull_request", pr=7)
    result = sami("teardown", "web", "--pr", "7", "--request-id", "close-7")
    assert result.code == 0, result.err
    teardown_id = result.lines[-1]
    assert f"deployment {teardown_id} QUEUED: teardown of pr-7_web" in result.err
    # The same request id: the same teardown, not a refusal.
    assert sami("teardown", "web", "--pr", "7", "--request-id", "close-7").lines[-1] == (
        teardown_id
    )
    assert agent.wait(teardown_id).state == deployment_pb2.SUCCEEDED

    unknown = sami("teardown", "web", "--pr", "8")
    assert unknown.code == 2 and "no preview of web for pull request 8" in unknown.err
