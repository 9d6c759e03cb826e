"""Cron runs on the control plane: an agent's report is stored once per run id, only for its
own cluster's cron deployments, acknowledged on the stream, and listed by CronService."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sami.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cron_pb2,
    cron_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
)
from sami_control import offline
from sami_control.core.commands import CronRunAckCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.cron_runs import CronRunInput
from sami_control.core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import ArtifactKind, CronRunOutcome, Deployment, Principal, Role
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.sessions import AgentSession
from sami_control.core.settings import Settings
from sami_control.storage.sqlite import SQLiteStore
from tests import samples
from tests.control.conftest import LiveServer

ADMIN = Principal("t0", "admin", Role.ADMIN)
READER = Principal("t3", "reader", Role.READER)
AGENT_C1 = Principal("t1", "agent-c1", Role.AGENT, cluster="c1")
AGENT_C2 = Principal("t2", "agent-c2", Role.AGENT, cluster="c2")
REF = "127.0.0.1:5000/backup@sha256:" + "a" * 64
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

CRON_MANIFEST = """\
version: v1beta
service_name: {service}
type: cron
cron:
  schedule: "*/5 * * * *"
  stack_files: [job.yml]
"""
JOB_STACK = """\
services:
  {service}:
    image: 127.0.0.1:5000/{service}:latest
    command: ["sh", "-c", "echo hi"]
"""


def cron_repo() -> dict[str, bytes]:
    files = samples.repo(["web"])
    for service in ("backup", "report"):
        for env in ("stage", "pull_request"):
            folder = f"services/{service}/cron/{env}"
            manifest = CRON_MANIFEST.format(service=service)
            if env == "pull_request":
                manifest += "pr_deploy: true\n"
            files[f"{folder}/sami.yaml"] = manifest.encode()
            files[f"{folder}/job.yml"] = JOB_STACK.format(service=service).encode()
    return files


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    store = SQLiteStore(tmp_path / "data")
    await store.open()
    core = ControlPlane(store, Settings(), lambda: T0 + 3600)
    await core.clusters.create(ADMIN, "c1", ["stage", "production"])
    await core.clusters.create(ADMIN, "c2", ["pull_request"])
    for name in ("backup", "report", "web"):
        await core.artifacts.register(
            ADMIN, ArtifactInput(name, ArtifactKind.IMAGE, REF.replace("backup", name), "")
        )
    await core.manifests.sync(ADMIN, "", list(cron_repo().items()))
    yield core
    await store.close()


async def deploy(cp: ControlPlane, service: str = "backup", env: str = "stage") -> Deployment:
    ref = REF.replace("backup", service)
    return await cp.deployments.create(ADMIN, DeploymentInput(service, env, ref))


async def connect(cp: ControlPlane, agent_id: str, who: Principal = AGENT_C1) -> AgentSession:
    session, _ = await cp.agents.connect(who, agent_id, "test", ["swarm", "cron"], [])
    while not session.outbox.empty():
        session.outbox.get_nowait()
    return session


def report(d: Deployment, run_id: str = "cron_1", **kw: object) -> CronRunInput:
    fields: dict[str, object] = {
        "run_id": run_id,
        "deployment_id": d.id,
        "job": d.service,
        "scheduled_for": T0 + 300,
        "started_at": T0 + 301,
        "finished_at": T0 + 303.5,
        "outcome": int(CronRunOutcome.SUCCEEDED),
        "exit_code": 0,
        "message": "1/1 task(s) completed",
        "schedule": "*/5 * * * *",
        "service": d.service,
        "environment": d.environment,
        "stack": d.stack_name,
    }
    fields.update(kw)
    return CronRunInput(**fields)  # type: ignore[arg-type]


def acks(s: AgentSession) -> list[CronRunAckCommand]:
    out = []
    while not s.outbox.empty():
        cmd = s.outbox.get_nowait()
        if isinstance(cmd, CronRunAckCommand):
            out.append(cmd)
    return out


async def test_a_cron_deployment_is_a_cron_job(cp: ControlPlane) -> None:
    d = await deploy(cp)
    assert d.deployment_type == "cron" and d.stack_name == "stage_backup"
    assert d.manifest_settings.cron_schedule == "*/5 * * * *"


async def test_a_run_is_stored_once_and_acknowledged_every_time(cp: ControlPlane) -> None:
    d = await deploy(cp)
    a1, a2 = await connect(cp, "m1"), await connect(cp, "m2")
    run = await cp.reports.cron_run(a1, report(d))
    assert (run.service, run.environment, run.cluster, run.stack) == (
        "backup",
        "stage",
        "c1",
        "stage_backup",
    )
    assert run.agent_id == "m1" and run.reported_at == T0 + 3600
    assert acks(a1) == [CronRunAckCommand("cron_1", "")]
    # The same run, from another manager's agent and again after a reconnect: stored once.
    again = await cp.reports.cron_run(a2, report(d, outcome=int(CronRunOutcome.FAILED)))
    assert again.agent_id == "m1" and again.outcome is CronRunOutcome.SUCCEEDED
    await cp.reports.cron_run(a1, report(d))
    assert acks(a2) == [CronRunAckCommand("cron_1", "")]
    assert acks(a1) == [CronRunAckCommand("cron_1", "")]
    runs, nxt = await cp.cron_runs.list(ADMIN, "backup", "stage", 0, "")
    assert [r.run_id for r in runs] == ["cron_1"] and nxt == ""
    (stored,) = runs
    assert stored.exit_code == 0 and stored.message == "1/1 task(s) completed"
    assert (stored.scheduled_for, stored.started_at, stored.finished_at) == (
        T0 + 300,
        T0 + 301,
        T0 + 303.5,
    )


async def test_a_run_of_another_clusters_deployment_is_refused_and_audited(
    cp: ControlPlane,
) -> None:
    d = await deploy(cp)  # stage: cluster c1
    other = await connect(cp, "m9", AGENT_C2)
    with pytest.raises(PermissionDenied, match="another cluster"):
        await cp.reports.cron_run(other, report(d))
    assert (await cp.cron_runs.list(ADMIN, "", "", 0, ""))[0] == []
    entries, _ = await cp.audit.list(ADMIN, 0, "", 100, "")
    refused = [e for e in entries if e.action == "agent.report"]
    assert [(e.outcome, e.target, e.token_name) for e in refused] == [
        ("PERMISSION_DENIED", d.id, "agent-c2")
    ]


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ({"deployment_id": "dep_nope"}, NotFound, "does not exist"),
        ({"service": "web"}, InvalidArgument, "cron_run.service"),
        ({"environment": "production"}, InvalidArgument, "cron_run.environment"),
        ({"stack": "other"}, InvalidArgument, "cron_run.stack"),
        ({"outcome": 0}, InvalidArgument, "cron_run.outcome"),
        ({"outcome": 7}, InvalidArgument, "cron_run.outcome"),
        ({"run_id": ""}, InvalidArgument, "cron_run.run_id"),
        ({"run_id": "a b"}, InvalidArgument, "cron_run.run_id"),
        ({"job": ""}, InvalidArgument, "cron_run.job"),
        ({"job": "../x"}, InvalidArgument, "cron_run.job"),
        ({"scheduled_for": 0.0}, InvalidArgument, "cron_run.scheduled_time"),
        ({"finished_at": float("nan")}, InvalidArgument, "cron_run.finish_time"),
        ({"started_at": -5.0}, InvalidArgument, "cron_run.start_time"),
        ({"message": "bad\x1b[31m"}, InvalidArgument, "cron_run.message"),
        ({"message": "x" * 4001}, InvalidArgument, "cron_run.message"),
        ({"exit_code": 2**40}, InvalidArgument, "cron_run.exit_code"),
    ],
)
async def test_bad_reports_are_refused_and_store_nothing(
    cp: ControlPlane, change: dict[str, object], error: type[Exception], says: str
) -> None:
    d = await deploy(cp)
    a = await connect(cp, "m1")
    with pytest.raises(error, match=says):
        await cp.reports.cron_run(a, report(d, **change))
    assert (await cp.cron_runs.list(ADMIN, "", "", 0, ""))[0] == []


async def test_only_cron_deployments_have_runs_and_run_ids_stay_with_their_deployment(
    cp: ControlPlane,
) -> None:
    web = await deploy(cp, "web")
    a = await connect(cp, "m1")
    with pytest.raises(FailedPrecondition, match="not a cron job"):
        await cp.reports.cron_run(a, report(web))
    backup, other = await deploy(cp), await deploy(cp, "report")
    await cp.reports.cron_run(a, report(backup, "cron_same"))
    with pytest.raises(AlreadyExists, match="already stored"):
        await cp.reports.cron_run(a, report(other, "cron_same"))


async def test_listing_filters_pages_and_needs_read(cp: ControlPlane) -> None:
    backup, other = await deploy(cp), await deploy(cp, "report")
    a = await connect(cp, "m1")
    for i in range(5):
        await cp.reports.cron_run(a, report(backup, f"cron_b{i}", scheduled_for=T0 + 300 * (i + 1)))
    await cp.reports.cron_run(a, report(other, "cron_r0"))
    runs, nxt = await cp.cron_runs.list(READER, "backup", "stage", 2, "")
    assert [r.run_id for r in runs] == ["cron_b4", "cron_b3"] and nxt
    runs, nxt = await cp.cron_runs.list(READER, "backup", "stage", 2, nxt)
    assert [r.run_id for r in runs] == ["cron_b2", "cron_b1"]
    runs, nxt = await cp.cron_runs.list(READER, "backup", "stage", 2, nxt)
    assert [r.run_id for r in runs] == ["cron_b0"] and nxt == ""
    assert [r.run_id for r in (await cp.cron_runs.list(READER, "report", "", 0, ""))[0]] == [
        "cron_r0"
    ]
    assert len((await cp.cron_runs.list(READER, "", "", 0, ""))[0]) == 6
    assert (await cp.cron_runs.list(READER, "backup", "production", 0, ""))[0] == []
    with pytest.raises(PermissionDenied):
        await cp.cron_runs.list(AGENT_C1, "backup", "stage", 0, "")
    with pytest.raises(InvalidArgument, match="environment"):
        await cp.cron_runs.list(READER, "backup", "staging", 0, "")
    with pytest.raises(InvalidArgument, match="service"):
        await cp.cron_runs.list(READER, "Backup", "", 0, "")


async def test_runs_survive_a_restart(cp: ControlPlane, tmp_path: Path) -> None:
    d = await deploy(cp)
    await cp.reports.cron_run(
        await connect(cp, "m1"), report(d, exit_code=None, outcome=2, message="gone")
    )
    reopened = SQLiteStore(tmp_path / "data")
    try:
        async with reopened.tx() as tx:
            (run,) = await tx.list_cron_runs("backup", "stage", 2**62, 10)
        assert run.exit_code is None and run.outcome is CronRunOutcome.FAILED
    finally:
        await reopened.close()


# Over the API: the agent stream and CronService.


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _stream_report(
    srv: LiveServer, token: str, run: cron_pb2.CronRun, agent_id: str
) -> list[agent_pb2.ControlMessage]:
    """Connect as an agent, send one cron run, return what came back before a pause."""
    got: list[agent_pb2.ControlMessage] = []

    def messages():  # type: ignore[no-untyped-def]
        hello = agent_pb2.Hello(agent_id=agent_id, capabilities=["cron"])
        yield agent_pb2.AgentMessage(hello=hello)
        yield agent_pb2.AgentMessage(cron_run=run)
        time.sleep(1.0)

    with grpc.insecure_channel(srv.addr) as ch:
        stream = agent_pb2_grpc.AgentServiceStub(ch).Connect(
            messages(), metadata=_md(token), timeout=5
        )
        try:
            for message in stream:
                got.append(message)
                if message.WhichOneof("msg") == "cron_run_ack":
                    break
        finally:
            stream.cancel()
    return got


def test_the_agent_stream_acknowledges_runs_and_refusals_keep_it_open(
    live_server: LiveServer,
) -> None:
    srv = live_server
    offline.add_cluster(srv.data, "c1", ["stage"])
    offline.add_cluster(srv.data, "c2", ["production"])
    admin = srv.token("admin")
    with grpc.insecure_channel(srv.addr) as ch:
        files = cron_repo()
        manifest_pb2_grpc.ManifestServiceStub(ch).SyncManifests(
            manifest_pb2.SyncManifestsRequest(
                files=[manifest_pb2.ManifestFile(path=p, content=c) for p, c in files.items()]
            ),
            metadata=_md(admin),
        )
        art = artifact_pb2_grpc.ArtifactServiceStub(ch).RegisterArtifact(
            artifact_pb2.RegisterArtifactRequest(
                artifact=artifact_pb2.Artifact(artifact_name="backup", ref=REF)
            ),
            metadata=_md(admin),
        )
        dep = deployment_pb2_grpc.DeploymentServiceStub(ch).CreateDeployment(
            deployment_pb2.CreateDeploymentRequest(
                service="backup", environment="stage", artifact=art.artifact.id
            ),
            metadata=_md(admin),
        )
    run = cron_pb2.CronRun(
        run_id="cron_api1",
        deployment_id=dep.id,
        service="backup",
        environment="stage",
        stack="stage_backup",
        job="backup",
        outcome=cron_pb2.CRON_RUN_OUTCOME_FAILED,
        message="task: non-zero exit (3)",
    )
    run.scheduled_time.FromSeconds(int(T0))
    run.start_time.FromSeconds(int(T0) + 1)
    run.finish_time.FromSeconds(int(T0) + 4)
    run.exit_code = 3
    got = _stream_report(srv, srv.token("agent", cluster="c1"), run, "m1")
    assert got[0].WhichOneof("msg") == "welcome"
    assert got[-1].cron_run_ack == agent_pb2.CronRunAck(run_id="cron_api1")
    # Another cluster's agent: refused, told why, and its stream stays open.
    refused = _stream_report(srv, srv.token("agent", cluster="c2"), run, "m9")
    assert refused[-1].cron_run_ack.run_id == "cron_api1"
    assert refused[-1].cron_run_ack.error.startswith("PERMISSION_DENIED: ")
    with grpc.insecure_channel(srv.addr) as ch:
        listed = cron_pb2_grpc.CronServiceStub(ch).ListCronRuns(
            cron_pb2.ListCronRunsRequest(service="backup", environment="stage"),
            metadata=_md(srv.token("reader")),
        )
    (stored,) = listed.runs
    assert (stored.run_id, stored.agent_id, stored.cluster, stored.exit_code) == (
        "cron_api1",
        "m1",
        "c1",
        3,
    )
    assert stored.outcome == cron_pb2.CRON_RUN_OUTCOME_FAILED
    assert stored.finish_time.seconds - stored.start_time.seconds == 3


_text = st.one_of(st.text(max_size=40), st.sampled_from(["", "backup", "stage", "\x00", "é" * 5]))
_time_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, T0, T0 + 60])
)


@pytest.fixture
async def fuzz_deployment(cp: ControlPlane) -> Deployment:
    """The cron deployment every fuzzed report may name: made once for all the examples (a
    function-scoped fixture is not reset between hypothesis examples)."""
    return await deploy(cp)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    run_id=st.one_of(_text, st.just("cron_fuzz")),
    use_real_deployment=st.booleans(),
    job=_text,
    times=st.tuples(_time_value, _time_value, _time_value),
    outcome=st.integers(-3, 5),
    exit_code=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    message=st.text(max_size=50),
    service=_text,
    environment=_text,
)
async def test_fuzzed_reports_are_stored_or_refused_never_crash(
    cp: ControlPlane,
    fuzz_deployment: Deployment,
    run_id: str,
    use_real_deployment: bool,
    job: str,
    times: tuple[float, float, float],
    outcome: int,
    exit_code: int | None,
    message: str,
    service: str,
    environment: str,
) -> None:
    d = fuzz_deployment
    a = await connect(cp, "fuzz")
    fields = {
        "run_id": run_id,
        "deployment_id": d.id if use_real_deployment else run_id,
        "job": job,
        "scheduled_for": times[0],
        "started_at": times[1],
        "finished_at": times[2],
        "outcome": outcome,
        "exit_code": exit_code,
        "message": message,
        "service": service,
        "environment": environment,
        "stack": "",
        "schedule": "",
    }
    try:
        run = await cp.reports.cron_run(a, CronRunInput(**fields))  # type: ignore[arg-type]
    except DomainError:
        return
    assert run.deployment_id == d.id and run.service == "backup"
