"""Live status and drift in the core (core/live_status.py): rows written on change only,
drift decided on each report with its reason, recorded in the audit log and ended when live
heals; nothing judged while a deployment is in flight; stale once the agent is gone."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from sami_control.core.commands import AssignCommand, DoneCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import Unauthenticated
from sami_control.core.live_status import drift_reason, drift_records
from sami_control.core.model import (
    AuditEntry,
    Deployment,
    LiveServiceState,
    Outcome,
    Principal,
    Role,
    State,
)
from sami_control.core.sessions import AgentSession
from sami_control.storage.sqlite_tx import SQLiteTx
from tests import samples
from tests.control.core_env import ADMIN, Clock, connect, deploy, drain, tick

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "c" * 64


def live(deployment_id: str, **kw: object) -> LiveServiceState:
    row = LiveServiceState(
        cluster="",
        stack_name="stage_web",
        swarm_service="web",
        service="",
        environment="",
        pull_request=0,
        deployment_id=deployment_id,
        label_digest=DIGEST,
        image=f"127.0.0.1:5000/web@{DIGEST}",
        desired_replicas=2,
        running_replicas=2,
        unhealthy_tasks=0,
        update_state="completed",
        update_message="",
        change_time=100.0,
        outside_change="",
        removed=False,
        reported_at=0.0,
    )
    return replace(row, **kw)  # type: ignore[arg-type]


async def deployed(cp: ControlPlane) -> tuple[AgentSession, Deployment]:
    a = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    c = cmd.deployment
    await cp.reports.result(a, d.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    drain(a)
    return a, d


async def audit_actions(cp: ControlPlane) -> list[tuple[str, str]]:
    entries, _ = await cp.audit.list(ADMIN, 0.0, "", 0, "")
    return [(e.action, e.detail) for e in entries if e.action.startswith("drift.")]


def test_drift_reasons() -> None:
    row = replace(live("d1"), service="web", environment="stage")
    assert drift_reason(row, 0.0, 30.0) == ""
    assert drift_reason(replace(row, removed=True), 0.0, 30.0).startswith("removed:")
    manual = replace(row, image=f"web@{OTHER}")
    assert drift_reason(manual, 0.0, 30.0) == (
        "image: runs sha256:cccccccccccc, Sami deployed sha256:aaaaaaaaaaaa (deployment d1)"
    )
    assert drift_reason(replace(row, image="nginx:alpine"), 0.0, 30.0).startswith(
        "image: runs nginx:alpine,"
    )
    scaled = replace(row, desired_replicas=1, running_replicas=1, deployed_replicas=2)
    assert drift_reason(scaled, 0.0, 30.0) == "replicas: scaled to 1 outside Sami (Sami deployed 2)"
    assert drift_reason(replace(row, outside_change="spec"), 0.0, 30.0).startswith("spec:")
    # Put back by hand: the image is Sami's again, whatever Swarm's previous spec was.
    assert drift_reason(replace(row, outside_change="image"), 0.0, 30.0) == ""
    assert drift_reason(replace(scaled, desired_replicas=2, outside_change="replicas 1 -> 2"),
                        0.0, 30.0) == ""  # fmt: skip
    short = replace(row, running_replicas=1, degraded_since=100.0)
    assert drift_reason(short, 129.0, 30.0) == ""  # within the grace period
    assert drift_reason(short, 131.0, 30.0) == "replicas: 1/2 running for 31 s"
    sick = replace(row, unhealthy_tasks=1, degraded_since=100.0)
    assert drift_reason(sick, 140.0, 30.0).startswith("unhealthy: 1 task(s)")


async def test_report_stores_targets_and_drift_starts_and_heals(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert (row.live.service, row.live.environment, row.live.cluster) == ("web", "stage", "c1")
    assert row.artifact_name == "web" and not row.drift_reason and not row.stale
    assert row.health == "healthy"

    clock.t += 5
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason.startswith("image: runs sha256:cccccccccccc")
    assert row.drift_since == clock.t
    since = clock.t
    clock.t += 5
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}", running_replicas=1)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_since == since  # the same drift goes on

    await cp.live.report(a, False, [live(d.id)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert not row.drift_reason
    assert [action for action, _ in await audit_actions(cp)] == ["drift.detected", "drift.healed"]


async def test_drift_records_past_and_ongoing_newest_first_in_scope(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    sidecar = live(d.id, swarm_service="redis")
    await cp.live.report(a, True, [live(d.id), sidecar])
    start = clock.t = clock.t + 5
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    healed = clock.t = clock.t + 5
    await cp.live.report(a, False, [live(d.id)])
    again = clock.t = clock.t + 5
    await cp.live.report(a, False, [replace(sidecar, desired_replicas=1)])

    records = await cp.live.drift_history(ADMIN, "web", "stage", 0, 0)
    assert [(r.swarm_service, r.started, r.ended) for r in records] == [
        ("stage_web_redis", again, 0.0),  # goes on
        ("stage_web_web", start, healed),
    ]
    assert records[1].reason.startswith("image: runs sha256:cccccccccccc")
    assert records[0].reason.startswith("replicas: scaled to 1 outside Sami")
    assert len(await cp.live.drift_history(ADMIN, "web", "stage", 0, 1)) == 1
    assert await cp.live.drift_history(ADMIN, "web", "production", 0, 0) == []
    assert await cp.live.drift_history(ADMIN, "web", "stage", 7, 0) == []
    prod_only = Principal("t9", "prod-reader", Role.READER, environments=("production",))
    assert await cp.live.drift_history(prod_only, "web", "stage", 0, 0) == []


async def test_a_deployment_that_heals_a_drift_ends_its_record_when_it_ends(
    env: tuple[ControlPlane, Clock],
) -> None:
    """The agent's reports during the rollout are not judged (Sami's own changes), and it
    sends none after: the result itself ends the record, not the next full report."""
    cp, clock = env
    a, _ = await deployed(cp)
    d1 = (await cp.deployments.list(ADMIN, "web", "stage", None, 1, ""))[0][0]
    await cp.live.report(a, True, [live(d1.id, image=f"web@{OTHER}")])
    assert (await cp.live.get(ADMIN, "", ""))[0].drift_reason.startswith("image: runs")
    d2 = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    clock.t += 5
    await cp.live.report(a, False, [live(d2.id)])  # in flight: not judged
    assert [action for action, _ in await audit_actions(cp)] == ["drift.detected"]
    clock.t += 5
    c = cmd.deployment
    await cp.reports.result(a, d2.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    assert [action for action, _ in await audit_actions(cp)] == ["drift.detected", "drift.healed"]
    (record,) = await cp.live.drift_history(ADMIN, "web", "stage", 0, 0)
    assert record.ended == clock.t
    assert not (await cp.live.get(ADMIN, "", ""))[0].drift_reason


def test_drift_records_from_audit_entries_of_any_age() -> None:
    def e(seq: int, action: str, target: str, detail: str = "") -> AuditEntry:
        return AuditEntry(float(seq), "", "sami", action, target, "ok", detail, seq=seq)

    records = drift_records(
        [
            e(4, "drift.healed", "web/stage/stage_web_web"),
            e(1, "drift.healed", "web/stage/stage_web_web"),  # its start is older: left out
            e(2, "drift.detected", "web/stage/stage_web_web", "image: a"),
            e(3, "drift.detected", "web#12/pull_request", "removed: b"),  # an old target
            e(5, "drift.detected", "not a target", "?"),
        ]
    )
    assert [(r.service, r.pull_request, r.swarm_service, r.reason, r.ended) for r in records] == [
        ("web", 12, "", "removed: b", 0.0),
        ("web", 0, "stage_web_web", "image: a", 4.0),
    ]


async def test_only_changes_are_written(
    env: tuple[ControlPlane, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    writes: list[LiveServiceState] = []
    put = SQLiteTx.put_live_service

    async def counted(tx: SQLiteTx, row: LiveServiceState) -> None:
        writes.append(row)
        await put(tx, row)

    monkeypatch.setattr(SQLiteTx, "put_live_service", counted)
    clock.t += 60
    await cp.live.report(a, True, [live(d.id)])  # the safety net: nothing changed
    assert writes == []
    await cp.live.report(a, False, [live(d.id, running_replicas=1)])
    assert [(w.running_replicas, w.reported_at) for w in writes] == [(1, clock.t)]


async def test_removed_service_is_drift_and_full_report_finds_it(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id), live(d.id, swarm_service="worker")])
    await cp.live.report(a, True, [live(d.id)])  # worker missing from a full report
    rows = {r.live.swarm_service: r for r in await cp.live.get(ADMIN, "", "")}
    assert rows["worker"].live.removed and rows["worker"].health == "removed"
    assert rows["worker"].drift_reason.startswith("removed:")
    assert not rows["web"].drift_reason


async def test_no_drift_while_a_deployment_is_in_flight(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    d2 = await deploy(cp)
    await tick(cp)
    drain(a)
    # The new deployment's stack deploy is under way: its own changes are no drift.
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}", running_replicas=0)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert not row.drift_reason
    assert d2.id != d.id


async def test_grace_period_drift_shows_at_read_time(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id, running_replicas=1)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert not row.drift_reason and row.health == "degraded"
    clock.t += cp.settings.drift_grace + 1
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason.startswith("replicas: 1/2 running")


async def test_stale_once_the_agent_is_gone_and_scope_filters(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    cp.agents.disconnect(a)
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.stale and row.report_time > 0
    prod_reader = Principal("t9", "prod-reader", Role.READER, environments=("production",))
    assert await cp.live.get(prod_reader, "", "") == []
    stage_reader = Principal("t9", "stage-reader", Role.READER, environments=("stage",))
    assert len(await cp.live.get(stage_reader, "", "")) == 1
    assert await cp.live.get(ADMIN, "api", "") == []


async def test_unknown_deployment_label_is_not_shown(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a, _ = await deployed(cp)
    await cp.live.report(a, True, [live("dep_from_elsewhere")])
    assert await cp.live.get(ADMIN, "", "") == []


async def redeploy_on_drift(cp: ControlPlane) -> None:
    files = samples.repo()
    path = "services/web/swarm/stage/sami.yaml"
    files[path] = files[path] + b"on_drift: redeploy\n"
    await cp.manifests.sync(ADMIN, "", list(files.items()))


async def test_on_drift_redeploy_heals_once_per_interval(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    await redeploy_on_drift(cp)
    await cp.live.report(a, True, [live(d.id)])
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 1

    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    listed, _ = await cp.deployments.list(ADMIN, "web", "stage", None, 0, "")
    heal = listed[0]
    assert len(listed) == 2 and heal.created_by == "sami (drift)"
    assert heal.artifact_id == d.artifact_id and heal.reason.startswith("on_drift: redeploy")

    # Queued (then in flight): no second one, whatever the reports say.
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}", running_replicas=1)])
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 2

    # It failed; within the interval nothing more is tried, after it once more.
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    c = cmd.deployment
    await cp.reports.result(a, heal.id, c.lease_id, c.epoch, Outcome.FAILED, "no")
    drain(a)
    clock.t += 10
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 2
    clock.t += cp.settings.drift_redeploy_interval
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}", running_replicas=1)])
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 3


async def test_on_drift_redeploy_of_a_gated_target_asks_once_for_approval(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a, d = await deployed(cp)
    files = samples.repo()
    path = "services/web/swarm/stage/sami.yaml"
    files[path] = files[path] + b"on_drift: redeploy\napproval: required\n"
    await cp.manifests.sync(ADMIN, "", list(files.items()))
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    listed, _ = await cp.deployments.list(ADMIN, "web", "stage", None, 0, "")
    assert listed[0].state is State.AWAITING_APPROVAL  # newest first
    # Intervals pass while nobody approves: still one request, not one per interval.
    for _ in range(3):
        clock.t += cp.settings.drift_redeploy_interval + 1
        await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}", running_replicas=1)])
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 2


async def test_on_drift_report_only_reports(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason
    assert len((await cp.deployments.list(ADMIN, "web", "stage", None, 0, ""))[0]) == 1


async def test_scaled_by_hand_and_back(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    await cp.live.report(
        a,
        False,
        [live(d.id, desired_replicas=1, running_replicas=1, outside_change="replicas 2 -> 1")],
    )
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason == "replicas: scaled to 1 outside Sami (Sami deployed 2)"
    await cp.live.report(a, False, [live(d.id, outside_change="replicas 1 -> 2")])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason == ""


async def test_first_seen_after_a_hand_scale(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(
        a,
        True,
        [live(d.id, desired_replicas=1, running_replicas=1, outside_change="replicas 2 -> 1")],
    )
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason == "replicas: scaled to 1 outside Sami (Sami deployed 2)"


async def test_a_deployment_that_ends_the_drift_shows_at_once(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, False, [live(d.id, image=f"web@{OTHER}")])
    d2 = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    # Its last change reported while it is in flight: the drift stays recorded...
    await cp.live.report(a, False, [live(d2.id)])
    (row,) = await cp.live.get(ADMIN, "", "")
    assert row.drift_reason
    c = cmd.deployment
    await cp.reports.result(a, d2.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    # ...and once it ended, status no longer shows it, without waiting for a report.
    (row,) = await cp.live.get(ADMIN, "", "")
    assert not row.drift_reason and row.live.deployment_id == d2.id


async def test_watch_sends_rows_then_each_change_and_counts_as_a_stream(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    watch = cp.live.watch(ADMIN, "web", "")
    first = await anext(watch)
    assert [r.live.running_replicas for r in first] == [2]
    assert len(cp.streams.of_token(ADMIN.token_id)) == 1
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)
    assert not pending.done()  # nothing changed: nothing sent
    await cp.live.report(a, False, [live(d.id, running_replicas=1)])
    second = await asyncio.wait_for(pending, 1.0)
    assert [r.live.running_replicas for r in second] == [1]
    cp.streams.end_token(ADMIN.token_id, "token revoked")
    with pytest.raises(Unauthenticated):
        await asyncio.wait_for(anext(watch), 1.0)
    await watch.aclose()
    assert cp.streams.of_token(ADMIN.token_id) == []


async def test_a_new_service_of_a_failed_rollout_removed_is_no_drift(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a, d = await deployed(cp)
    await cp.live.report(a, True, [live(d.id)])
    d2 = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    # The rollout adds a worker, fails, and removes it again (remove_failed_new_services).
    await cp.live.report(a, False, [live(d2.id), live(d2.id, swarm_service="worker")])
    c = cmd.deployment
    await cp.reports.result(a, d2.id, c.lease_id, c.epoch, Outcome.FAILED, "worker crashed")
    await cp.live.report(a, True, [live(d.id)])
    rows = await cp.live.get(ADMIN, "", "")
    assert [(r.live.swarm_service, r.drift_reason) for r in rows] == [("web", "")]


async def test_a_failure_to_judge_after_a_result_does_not_fail_the_result(
    env: tuple[ControlPlane, Clock],
) -> None:
    """The result is stored and Done sent before the target is judged again: a store
    failure there leaves the drift to the agent's next report, not the agent's stream."""
    cp, _ = env
    a = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)

    async def broken(*_: object) -> None:
        raise OSError("the store went away")

    cp.reports.on_result = broken
    c = cmd.deployment
    await cp.reports.result(a, d.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    assert (await cp.deployments.get(ADMIN, d.id)).state is State.SUCCEEDED
    assert any(isinstance(m, DoneCommand) for m in drain(a))
