"""The domain core in-process (no grpc): state machine, leases, fencing, supersede, cancel,
idempotency. A fake clock makes lease expiry exact; the store is a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sami_control.core.commands import (
    AssignCommand,
    CancelCommand,
    DoneCommand,
    HeldLease,
    RevokeCommand,
)
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import (
    ArtifactKind,
    DeploymentAction,
    Event,
    EventType,
    Outcome,
    PreviewStack,
    Principal,
    Role,
    State,
)
from sami_control.core.requests import ArtifactInput
from sami_control.core.settings import Settings
from sami_control.storage.sqlite import SQLiteStore
from tests import samples
from tests.control.core_env import (
    ADMIN,
    AGENT_C1,
    AGENT_C2,
    REF,
    REF2,
    Clock,
    connect,
    deploy,
    drain,
    events,
    get,
    states,
    tick,
)


async def test_happy_path_lifecycle(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    d = await deploy(cp, reason="release 1.2")
    assert d.state is State.QUEUED and d.stack_name == "stage_web" and d.cluster == "c1"
    a = await connect(cp, "a1")
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand) and cmd.deployment.id == d.id
    assert cmd.artifact.ref == REF and cmd.deployment.attempt == 1
    lease, epoch = cmd.deployment.lease_id, cmd.deployment.epoch
    await cp.reports.ack(a, d.id, lease, epoch)
    for seq in (1, 2, 2, 3, 1):  # duplicates are ignored
        await cp.reports.progress(a, d.id, lease, epoch, seq, "converge", f"step {seq}")
    await cp.reports.result(a, d.id, lease, epoch, Outcome.SUCCEEDED, "")
    assert isinstance(drain(a)[-1], DoneCommand)
    assert await states(cp, d) == ["QUEUED", "ASSIGNED", "IN_PROGRESS", "SUCCEEDED"]
    progress = [e.message for e in await events(cp, d) if e.type is EventType.PROGRESS]
    assert progress == ["step 1", "step 2", "step 3"]
    seqs = [e.sequence for e in await events(cp, d)]
    assert seqs == list(range(1, len(seqs) + 1))
    # A result sent again after a reconnect is acknowledged, not applied twice.
    await cp.reports.result(a, d.id, lease, epoch, Outcome.FAILED, "late")
    assert isinstance(drain(a)[-1], DoneCommand)
    assert (await get(cp, d)).state is State.SUCCEEDED


async def test_no_cluster_serves_environment(
    env: tuple[ControlPlane, Clock], tmp_path: Path
) -> None:
    _cp, _ = env
    store = SQLiteStore(tmp_path / "other")
    cp2 = ControlPlane(store)
    await cp2.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
    with pytest.raises(FailedPrecondition, match="sami cluster create NAME --env stage"):
        await deploy(cp2)
    assert (await cp2.deployments.list(ADMIN, "", "", None, 0, ""))[0] == []
    await store.close()


async def test_request_id_idempotency(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    d1 = await deploy(cp, request_id="ci-run-7")
    d2 = await deploy(cp, request_id="ci-run-7")
    assert d1.id == d2.id
    with pytest.raises(AlreadyExists, match="different request"):
        await deploy(cp, ref=REF2, request_id="ci-run-7")
    assert len((await cp.deployments.list(ADMIN, "", "", None, 0, ""))[0]) == 1


async def test_bad_input_names_the_field_and_writes_nothing(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    cases = [
        ({"service": "Web"}, "service"),
        ({"service": ""}, "service"),
        ({"service": "web\u200b"}, "service"),
        ({"environment": "prod"}, "environment"),
        ({"environment": "qa"}, "environment"),
        ({"pull_request": 3}, "pull_request"),
        ({"environment": "pull_request"}, "pull_request"),
        ({"artifact": "web:latest"}, "artifact"),
        ({"artifact": "web@sha256:XYZ"}, "artifact"),
        ({"reason": "a\u202eb"}, "reason"),
        ({"request_id": "../x"}, "request_id"),
    ]
    for override, field in cases:
        with pytest.raises(InvalidArgument) as ei:
            await deploy(cp, **override)
        assert ei.value.violations[0][0] == field, override
    with pytest.raises(NotFound, match="sami artifact register"):
        await deploy(cp, ref="127.0.0.1:5000/web@sha256:" + "f" * 64)
    assert (await cp.deployments.list(ADMIN, "", "", None, 0, ""))[0] == []


async def test_newer_request_supersedes_queued_one(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    d1 = await deploy(cp)
    d2 = await deploy(cp, ref=REF2)
    other_env = await deploy(cp, environment="production")
    assert (await get(cp, d1)).state is State.SUPERSEDED
    assert (await get(cp, d1)).status_message == f"superseded by {d2.id}"
    assert (await get(cp, d2)).state is State.QUEUED
    assert (await get(cp, other_env)).state is State.QUEUED


async def test_one_active_deployment_per_service_and_environment(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a1, a2 = await connect(cp, "a1"), await connect(cp, "a2")
    d1 = await deploy(cp)
    await tick(cp)
    d2 = await deploy(cp, ref=REF2)  # d1 is active, so d2 waits (and is not superseded by it)
    await tick(cp)
    assigned = [c for c in drain(a1) + drain(a2) if isinstance(c, AssignCommand)]
    assert [c.deployment.id for c in assigned] == [d1.id]
    assert (await get(cp, d2)).state is State.QUEUED
    c = assigned[0].deployment
    owner = a1 if c.agent_id == "a1" else a2
    await cp.reports.result(owner, d1.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    await tick(cp)
    assert (await get(cp, d2)).state is State.ASSIGNED


async def test_lease_expiry_redelivers_with_new_epoch_and_fences_old_agent(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (first,) = drain(a1)
    assert isinstance(first, AssignCommand)
    old = first.deployment
    await cp.reports.ack(a1, d.id, old.lease_id, old.epoch)
    cp.agents.disconnect(a1)  # the agent dies
    a2 = await connect(cp, "a2")
    clock.t += 29
    await tick(cp)
    assert (await get(cp, d)).state is State.IN_PROGRESS  # the lease still runs
    clock.t += 2
    await tick(cp)
    (second,) = drain(a2)
    assert isinstance(second, AssignCommand)
    new = second.deployment
    assert (new.attempt, new.agent_id) == (2, "a2") and new.epoch > old.epoch
    assert new.lease_id != old.lease_id
    # The dead agent comes back: its lease is not resumed, its late reports are refused.
    a1b, resumed = await cp.agents.connect(
        AGENT_C1, "a1", "test", ["swarm"], [HeldLease(d.id, old.lease_id, old.epoch)]
    )
    assert resumed == []
    await cp.reports.progress(a1b, d.id, old.lease_id, old.epoch, 9, "apply", "late")
    await cp.reports.result(a1b, d.id, old.lease_id, old.epoch, Outcome.FAILED, "late")
    assert all(isinstance(c, RevokeCommand) for c in drain(a1b))
    assert (await get(cp, d)).state is State.ASSIGNED
    assert "late" not in [e.message for e in await events(cp, d)]
    await cp.reports.ack(a2, d.id, new.lease_id, new.epoch)
    await cp.reports.result(a2, d.id, new.lease_id, new.epoch, Outcome.SUCCEEDED, "")
    assert await states(cp, d) == [
        "QUEUED",
        "ASSIGNED",
        "IN_PROGRESS",
        "QUEUED",
        "ASSIGNED",
        "IN_PROGRESS",
        "SUCCEEDED",
    ]


async def test_unacked_assignment_is_offered_again_then_fails_after_max_attempts(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    for attempt in (1, 2, 3):
        await tick(cp)
        assert (await get(cp, d)).attempt == attempt
        clock.t += 11  # past the ack timeout
    await tick(cp)
    final = await get(cp, d)
    assert final.state is State.FAILED
    assert "gave up after 3 attempts" in final.status_message
    assert sum(isinstance(c, AssignCommand) for c in drain(a1)) == 3


async def test_reconnect_resumes_held_lease(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a1)
    assert isinstance(cmd, AssignCommand)
    lease = HeldLease(d.id, cmd.deployment.lease_id, cmd.deployment.epoch)
    await cp.reports.ack(a1, *lease.__dict__.values())
    cp.agents.disconnect(a1)
    clock.t += 20
    a1b, resumed = await cp.agents.connect(AGENT_C1, "a1", "test", ["swarm"], [lease])
    assert resumed == [lease]
    clock.t += 20  # past the original expiry: the reconnect renewed it
    await tick(cp)
    assert (await get(cp, d)).state is State.IN_PROGRESS
    await cp.reports.result(a1b, d.id, lease.lease_id, lease.epoch, Outcome.ROLLED_BACK, "health")
    assert (await get(cp, d)).state is State.ROLLED_BACK
    assert (await get(cp, d)).status_message == "health"


async def test_restarted_agent_without_its_lease_gets_work_requeued_at_once(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a1 = await connect(cp, "a1")
    await deploy(cp)
    await tick(cp)
    drain(a1)
    cp.agents.disconnect(a1)
    a1b = await connect(cp, "a1")  # restarted: holds nothing
    await tick(cp)
    (cmd,) = [c for c in drain(a1b) if isinstance(c, AssignCommand)]
    assert cmd.deployment.attempt == 2


async def test_agent_cannot_touch_another_clusters_deployment(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a1)
    assert isinstance(cmd, AssignCommand)
    intruder = await connect(cp, "b1", AGENT_C2)
    with pytest.raises(PermissionDenied):
        await cp.reports.ack(intruder, d.id, cmd.deployment.lease_id, cmd.deployment.epoch)
    with pytest.raises(PermissionDenied):
        await cp.reports.result(
            intruder, d.id, cmd.deployment.lease_id, cmd.deployment.epoch, Outcome.SUCCEEDED, ""
        )
    assert (await get(cp, d)).state is State.ASSIGNED


async def test_cancel_queued_and_in_progress(env: tuple[ControlPlane, Clock]) -> None:
    cp, _clock = env
    d1 = await deploy(cp)
    assert (await cp.deployments.cancel(ADMIN, d1.id, "oops")).state is State.CANCELLED
    with pytest.raises(FailedPrecondition, match="already ended"):
        await cp.deployments.cancel(ADMIN, d1.id, "")
    a1 = await connect(cp, "a1")
    d2 = await deploy(cp, ref=REF2)
    await tick(cp)
    (cmd,) = drain(a1)
    assert isinstance(cmd, AssignCommand)
    c = cmd.deployment
    await cp.reports.ack(a1, d2.id, c.lease_id, c.epoch)
    after = await cp.deployments.cancel(ADMIN, d2.id, "stop")
    assert after.state is State.IN_PROGRESS and after.cancel_requested
    (cancel,) = drain(a1)
    assert isinstance(cancel, CancelCommand) and cancel.deployment_id == d2.id
    await cp.reports.result(a1, d2.id, c.lease_id, c.epoch, Outcome.CANCELLED, "rolled back")
    assert (await get(cp, d2)).state is State.CANCELLED


async def test_cancel_with_lost_agent_ends_cancelled_not_redelivered(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    await cp.deployments.cancel(ADMIN, d.id, "")
    cp.agents.disconnect(a1)
    clock.t += 60
    await tick(cp)
    assert (await get(cp, d)).state is State.CANCELLED


async def test_watch_replays_then_follows_and_resumes(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a1 = await connect(cp, "a1")
    d = await deploy(cp)
    await tick(cp)
    (cmd,) = drain(a1)
    assert isinstance(cmd, AssignCommand)
    c = cmd.deployment

    async def collect(after: int) -> list[int]:
        seen: list[int] = []
        async for item in cp.deployments.watch(ADMIN, d.id, after):
            if isinstance(item, Event):
                seen.append(item.sequence)
        return seen

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        live = asyncio.ensure_future(collect(0))
        await asyncio.sleep(0.01)
        await cp.reports.ack(a1, d.id, c.lease_id, c.epoch)
        for i in range(1, 4):
            await cp.reports.progress(a1, d.id, c.lease_id, c.epoch, i, "converge", str(i))
            await asyncio.sleep(0)
        await cp.reports.result(a1, d.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
        full = await asyncio.wait_for(live, 5)
        resumed = await asyncio.wait_for(collect(4), 5)
        at_end = await asyncio.wait_for(collect(full[-1]), 5)
        return full, resumed, at_end

    full, resumed, at_end = await scenario()
    assert full == list(range(1, 8))
    assert resumed == [5, 6, 7]
    assert at_end == []


async def test_watch_of_unknown_deployment(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env

    async def first() -> object:
        return await anext(aiter(cp.deployments.watch(ADMIN, "dep_nope", 0)))

    with pytest.raises(NotFound):
        await first()


def test_restart_extends_leases_by_grace(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "d")
        clock = Clock()
        cp = ControlPlane(store, Settings(lease_ttl=5, restart_grace=60), clock)
        await cp.clusters.create(ADMIN, "c1", ["stage"])
        await cp.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
        await cp.manifests.sync(ADMIN, "", list(samples.repo().items()))
        a1 = await connect(cp, "a1")
        d = await deploy(cp)
        await tick(cp)
        await store.close()
        clock.t += 30  # down for 30 s: longer than the lease
        store2 = SQLiteStore(tmp_path / "d")
        cp2 = ControlPlane(store2, Settings(lease_ttl=5, restart_grace=60), clock)
        await cp2.start()
        await tick(cp2)
        assert (await cp2.deployments.get(ADMIN, d.id)).state is State.ASSIGNED
        await cp2.stop()
        await store2.close()
        del a1

    asyncio.run(scenario())


async def test_live_previews_per_service_are_capped(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    cp.settings.max_previews_per_service = 3
    for pr in (4, 2, 9):
        await deploy(cp, environment="pull_request", pull_request=pr)
    with pytest.raises(FailedPrecondition) as err:
        await deploy(cp, environment="pull_request", pull_request=10)
    assert "web has 3 live previews" in err.value.message
    assert "the oldest (#4, #2, #9)" in err.value.message
    assert "sami teardown web --pr N" in err.value.message
    # A new deployment of a live preview is no new stack; another service has its own room.
    await deploy(cp, environment="pull_request", pull_request=2)
    await cp.deployments.teardown_preview(ADMIN, "web", 4, "merged", "")
    await deploy(cp, environment="pull_request", pull_request=10)
    # A preview not deployed within preview_ttl counts as closed.
    clock.t += cp.settings.preview_ttl + 1
    await deploy(cp, environment="pull_request", pull_request=11)


async def test_teardown_preview_is_queued_like_a_deployment(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    with pytest.raises(NotFound, match="no preview of web for pull request 5"):
        await cp.deployments.teardown_preview(ADMIN, "web", 5, "", "")
    preview = await deploy(cp, environment="pull_request", pull_request=5)
    td = await cp.deployments.teardown_preview(ADMIN, "web", 5, "PR merged", "close-5")
    assert td.action is DeploymentAction.TEARDOWN and td.stack_name == "pr-5_web"
    assert (
        await cp.deployments.teardown_preview(ADMIN, "web", 5, "PR merged", "close-5")
    ).id == td.id
    assert (await get(cp, preview)).state is State.SUPERSEDED  # it never ran: nothing to deploy
    with pytest.raises(FailedPrecondition, match="already torn down"):
        await cp.deployments.teardown_preview(ADMIN, "web", 5, "", "")
    a = await connect(cp, "b1", AGENT_C2)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    assert cmd.deployment.action is DeploymentAction.TEARDOWN
    stage_only = Principal("t8", "ci", Role.DEPLOYER, environments=("stage",))
    with pytest.raises(PermissionDenied):
        await cp.deployments.teardown_preview(stage_only, "web", 5, "", "")


async def test_inventory_tears_down_orphans_and_stale_previews_only(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    a = await connect(cp, "b1", AGENT_C2)
    open_pr = await deploy(cp, environment="pull_request", pull_request=1)
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand)
    c = cmd.deployment
    await cp.reports.result(a, open_pr.id, c.lease_id, c.epoch, Outcome.SUCCEEDED, "")
    stacks = [
        PreviewStack("pr-1_web", "web", 1),  # open: deployed just now
        PreviewStack("pr-2_web", "web", 2, "dep_gone"),  # unknown to Sami: an orphan
        PreviewStack("pr-3_web", "api", 3),  # name does not match: ignored, never removed
    ]
    created = await cp.reports.inventory(a, stacks)
    assert len(created) == 1
    orphan = await cp.deployments.get(ADMIN, created[0])
    assert (orphan.action, orphan.stack_name, orphan.artifact_id) == (
        DeploymentAction.TEARDOWN,
        "pr-2_web",
        "",
    )
    assert "unknown to Sami" in orphan.reason
    assert await cp.reports.inventory(a, stacks) == []  # its teardown is queued: not twice
    clock.t += cp.settings.preview_ttl + 1
    (stale,) = await cp.reports.inventory(a, stacks[:1])
    assert (await cp.deployments.get(ADMIN, stale)).stack_name == "pr-1_web"


async def test_heartbeats_are_answered(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a = await connect(cp, "a1")
    await cp.reports.heartbeat(a, [])
    assert [type(c).__name__ for c in drain(a)] == ["HeartbeatAckCommand"]
