"""Release safety in the core: target locks (who may take, release and break them, what
they refuse, expiry, queued work held) and quarantined digests (refused unless forced)."""

from __future__ import annotations

import pytest

from sami_control.core.commands import AssignCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import ArtifactKind, Deployment, Outcome, Principal, Role, State
from sami_control.core.requests import ArtifactInput
from sami_control.core.sessions import AgentSession
from sami_control.core.settings import Settings
from sami_control.storage.postgres import PostgresStore
from tests import samples
from tests.control.core_env import ADMIN, REF, REF2, Clock, connect, deploy, drain, get, tick
from tests.pg import PgDatabase

ALICE = Principal("t_alice", "alice", Role.DEPLOYER, services=("web",), environments=("stage",))
BOB = Principal("t_bob", "bob", Role.DEPLOYER, services=("web",), environments=("stage",))
READER = Principal("t_r", "reader", Role.READER)


async def audit_actions(cp: ControlPlane) -> list[tuple[str, str, str]]:
    entries, _ = await cp.audit.list(ADMIN, 0, "", 1000, "")
    return [(e.action, e.target, e.outcome) for e in entries if e.action.startswith("lock.")]


async def test_a_lock_refuses_deployments_to_its_target_naming_holder_and_reason(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    await cp.locks.lock(ADMIN, "stage", "", "db migration", 0)
    with pytest.raises(FailedPrecondition) as err:
        await deploy(cp)
    assert "stage (every service) is locked by admin: db migration" in err.value.message
    assert "sami unlock --env stage" in err.value.message
    # Another environment is not locked.
    assert (await deploy(cp, environment="production")).state is State.QUEUED
    await cp.locks.unlock(ADMIN, "stage", "")
    assert (await deploy(cp)).state is State.QUEUED


async def test_a_service_lock_covers_that_service_only(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    await cp.locks.lock(ALICE, "stage", "web", "investigating", 0)
    with pytest.raises(FailedPrecondition, match="web in stage is locked by alice"):
        await deploy(cp)
    with pytest.raises(AlreadyExists, match="locked by alice"):
        await cp.locks.lock(ADMIN, "stage", "web", "me too", 0)
    assert [(lk.service, lk.holder) for lk in await cp.locks.list(READER, "stage", "web")] == [
        ("web", "alice")
    ]
    assert await cp.locks.list(READER, "stage", "api") == []


async def test_expired_locks_stop_applying(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    lock = await cp.locks.lock(ADMIN, "stage", "", "quick fix", 7200)
    assert lock.expires_at == clock.t + 7200
    clock.t += 7199
    with pytest.raises(FailedPrecondition):
        await deploy(cp)
    clock.t += 2
    assert await cp.locks.list(READER, "", "") == []
    assert (await deploy(cp)).state is State.QUEUED
    # Its target can be locked again; unlocking the expired one says it is not locked.
    with pytest.raises(NotFound):
        await cp.locks.unlock(ADMIN, "stage", "")


async def test_who_may_lock_unlock_and_break(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    with pytest.raises(PermissionDenied):
        await cp.locks.lock(READER, "stage", "web", "no", 0)
    with pytest.raises(PermissionDenied, match="may deploy only to stage"):
        await cp.locks.lock(ALICE, "production", "web", "not mine", 0)
    with pytest.raises(PermissionDenied, match="only those"):
        await cp.locks.lock(ALICE, "stage", "", "every service", 0)
    with pytest.raises(InvalidArgument, match="reason"):
        await cp.locks.lock(ALICE, "stage", "web", " ", 0)
    await cp.locks.lock(ALICE, "stage", "web", "mine", 0)
    with pytest.raises(PermissionDenied, match="only its holder or an admin"):
        await cp.locks.unlock(BOB, "stage", "web")
    await cp.locks.unlock(ALICE, "stage", "web")
    await cp.locks.lock(ALICE, "stage", "web", "again", 0)
    broken = await cp.locks.unlock(ADMIN, "stage", "web")
    assert broken.holder == "alice"
    assert await audit_actions(cp) == [
        ("lock.create", "web/stage", "PERMISSION_DENIED"),
        ("lock.create", "web/production", "PERMISSION_DENIED"),
        ("lock.create", "*/stage", "PERMISSION_DENIED"),
        ("lock.create", "web/stage", "INVALID_ARGUMENT"),
        ("lock.create", "web/stage", "ok"),
        ("lock.delete", "web/stage", "PERMISSION_DENIED"),
        ("lock.delete", "web/stage", "ok"),
        ("lock.create", "web/stage", "ok"),
        ("lock.break", "web/stage", "ok"),
    ]


async def test_a_lock_holds_queued_work_until_the_unlock(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    d = await deploy(cp)
    await cp.locks.lock(ADMIN, "stage", "web", "hold it", 0)
    a = await connect(cp, "a1")
    await tick(cp)
    assert drain(a) == [] and (await get(cp, d)).state is State.QUEUED
    await cp.locks.unlock(ADMIN, "stage", "web")
    await tick(cp)
    (cmd,) = drain(a)
    assert isinstance(cmd, AssignCommand) and cmd.deployment.id == d.id


async def run_to(cp: ControlPlane, a: AgentSession, d: Deployment, outcome: Outcome) -> None:
    await tick(cp)
    (cmd,) = [c for c in drain(a) if isinstance(c, AssignCommand) and c.deployment.id == d.id]
    lease, epoch = cmd.deployment.lease_id, cmd.deployment.epoch
    await cp.reports.ack(a, d.id, lease, epoch)
    await cp.reports.result(a, d.id, lease, epoch, outcome, "")
    assert (await get(cp, d)).state.name == outcome.name


async def test_a_digest_that_went_bad_is_quarantined_until_forced(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    outcome = Outcome.ROLLED_BACK
    a = await connect(cp, "a1")
    await run_to(cp, a, await deploy(cp, REF), Outcome.SUCCEEDED)
    bad = await deploy(cp, REF2)
    await run_to(cp, a, bad, outcome)
    with pytest.raises(FailedPrecondition) as err:
        await deploy(cp, REF2)
    assert f"quarantined in web/stage: deployment {bad.id} {outcome.name}" in err.value.message
    assert "--force" in err.value.message
    # Elsewhere it is not quarantined, and the good one still deploys.
    await deploy(cp, REF2, environment="production")
    await deploy(cp, REF)
    forced = await deploy(cp, REF2, force=True)
    entries, _ = await cp.audit.list(ADMIN, 0, "", 1000, "")
    (entry,) = [e for e in entries if e.target == forced.id]
    assert f"forced past quarantine: deployment {bad.id}" in entry.detail
    # A forced deploy that succeeds lifts the quarantine.
    await run_to(cp, a, forced, Outcome.SUCCEEDED)
    await deploy(cp, REF2)


async def test_a_failed_digest_may_be_deployed_again(env: tuple[ControlPlane, Clock]) -> None:
    # FAILED may mean it never ran (attempts exhausted, the registry down): CI retries.
    cp, _ = env
    a = await connect(cp, "a1")
    await run_to(cp, a, await deploy(cp, REF2), Outcome.FAILED)
    again = await deploy(cp, REF2)
    assert again.state.name == "QUEUED"


async def test_a_rollback_quarantines_what_it_rolled_back(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    a = await connect(cp, "a1")
    good = await deploy(cp, REF)
    await run_to(cp, a, good, Outcome.SUCCEEDED)
    await run_to(cp, a, await deploy(cp, REF2), Outcome.SUCCEEDED)
    back = await deploy(cp, REF, rollback_of=good.id)
    await run_to(cp, a, back, Outcome.SUCCEEDED)
    with pytest.raises(FailedPrecondition, match=f"deployment {back.id} rolled it back"):
        await deploy(cp, REF2)


async def test_a_lock_taken_on_one_replica_refuses_a_create_on_another(
    pg_database: PgDatabase,
) -> None:
    """Two control planes on one PostgreSQL: the create's check reads the lock another
    replica committed."""
    stores = [PostgresStore(pg_database.url, pool_size=2) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        one, two = (ControlPlane(s, Settings(), Clock()) for s in stores)
        await one.clusters.create(ADMIN, "c1", ["stage", "production"])
        await one.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
        await one.manifests.sync(ADMIN, "", list(samples.repo().items()))
        await one.locks.lock(ADMIN, "stage", "web", "replica freeze", 0)
        with pytest.raises(FailedPrecondition, match="locked by admin: replica freeze"):
            await deploy(two)
        await two.locks.unlock(ADMIN, "stage", "web")
        assert (await deploy(one)).state is State.QUEUED
    finally:
        for s in stores:
            await s.close()


async def test_queue_fifo_keeps_every_queued_deployment_and_runs_them_in_order(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    files = samples.repo(("web",))
    files["services/web/swarm/stage/sami.yaml"] += b"queue: fifo\n"
    await cp.manifests.sync(ADMIN, "", list(files.items()))
    d1, d2, d3 = await deploy(cp), await deploy(cp, ref=REF2), await deploy(cp)
    assert [(await get(cp, d)).state for d in (d1, d2, d3)] == [State.QUEUED] * 3
    assert (await get(cp, d3)).manifest_settings.queue == "fifo"
    # Production keeps the default rule: the newer request supersedes the queued one.
    p1 = await deploy(cp, environment="production")
    await deploy(cp, environment="production", ref=REF2)
    assert (await get(cp, p1)).state is State.SUPERSEDED

    agent = await connect(cp, "a1")
    for d in (d1, d2, d3):
        await tick(cp)
        (assigned,) = [
            c.deployment
            for c in drain(agent)
            if isinstance(c, AssignCommand) and c.deployment.environment == "stage"
        ]
        assert assigned.id == d.id
        await cp.reports.result(
            agent, d.id, assigned.lease_id, assigned.epoch, Outcome.SUCCEEDED, ""
        )
    assert [(await get(cp, d)).state for d in (d1, d2, d3)] == [State.SUCCEEDED] * 3
