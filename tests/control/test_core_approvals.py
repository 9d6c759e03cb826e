"""Approvals in the core (issue 21 item 2): a target whose manifest says `approval: required`
gets deployments AWAITING_APPROVAL, never dispatched, until another identity approves them
(→ QUEUED), rejects them or lets them expire (→ CANCELLED); and the state machine's table."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sami_control.core.bus import Notice
from sami_control.core.commands import AssignCommand
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from sami_control.core.model import (
    ArtifactKind,
    Deployment,
    Outcome,
    Principal,
    Role,
    State,
)
from sami_control.core.requests import ArtifactInput, DeploymentInput
from sami_control.core.settings import Settings
from sami_control.core.transitions import LEGAL, move
from sami_control.storage.postgres import PostgresStore
from tests import samples
from tests.control.core_env import (
    ADMIN,
    AGENT_C1,
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
from tests.pg import PgDatabase

ALICE = Principal("t_alice", "alice", Role.DEPLOYER, services=("web",))
ALICE_2 = Principal("t_alice2", "alice", Role.DEPLOYER, services=("web",))  # her 2nd token
BOB = Principal("t_bob", "bob", Role.DEPLOYER, services=("web",))
CAROL = Principal("t_carol", "carol", Role.DEPLOYER)
STAGE_ONLY = Principal("t_dave", "dave", Role.DEPLOYER, environments=("stage",))
ROOT = Principal("t_root", "root", Role.ADMIN)
PROD = "services/web/swarm/production/sami.yaml"


def test_the_transition_table_is_the_documented_one() -> None:
    """ARCHITECTURE.md's table, state by state: a change here is an API change."""
    s = State
    assert {
        s.AWAITING_APPROVAL: {s.QUEUED, s.CANCELLED},
        s.QUEUED: {s.ASSIGNED, s.CANCELLED, s.SUPERSEDED, s.FAILED},
        s.ASSIGNED: {s.IN_PROGRESS, s.QUEUED, s.CANCELLED, s.FAILED, s.SUCCEEDED, s.ROLLED_BACK},
        s.IN_PROGRESS: {s.SUCCEEDED, s.FAILED, s.ROLLED_BACK, s.CANCELLED, s.QUEUED},
    } == LEGAL
    for terminal in (s.SUCCEEDED, s.FAILED, s.ROLLED_BACK, s.CANCELLED, s.SUPERSEDED):
        assert terminal.terminal and terminal not in LEGAL
    assert not s.AWAITING_APPROVAL.terminal and not s.AWAITING_APPROVAL.active


@pytest.mark.parametrize("to", [State.ASSIGNED, State.IN_PROGRESS, State.SUPERSEDED])
def test_a_deployment_awaiting_approval_cannot_skip_the_approval(to: State) -> None:
    d = Deployment("d1", "web", "production", 0, "a", "c1", "swarm", "s")
    d.state = State.AWAITING_APPROVAL
    with pytest.raises(FailedPrecondition, match="is AWAITING_APPROVAL and cannot become"):
        move(d, to, 1.0)


async def require_approval(cp: ControlPlane, *lines: str) -> None:
    files = samples.repo(("web",))
    files[PROD] += "".join(f"{line}\n" for line in ("approval: required", *lines)).encode()
    await cp.manifests.sync(ADMIN, "", list(files.items()))


async def request(cp: ControlPlane, who: Principal = ALICE, **kw: object) -> Deployment:
    args: dict[str, object] = {"service": "web", "environment": "production", "artifact": REF}
    args.update(kw)
    return await cp.deployments.create(who, DeploymentInput(**args))  # type: ignore[arg-type]


async def audit_of(cp: ControlPlane, dep_id: str) -> list[tuple[str, str, str]]:
    entries, _ = await cp.audit.list(ADMIN, 0, "", 1000, "")
    return [(e.action, e.token_name, e.outcome) for e in entries if e.target == dep_id]


async def test_a_deployment_to_a_gated_target_awaits_approval_and_is_not_dispatched(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, clock = env
    queued = await deploy(cp, environment="production", ref=REF2)  # before the gate
    await require_approval(cp, "approvers: [bob, admin]", "approval_expires: 2h")
    d = await request(cp, reason="release 1.2")
    assert d.state is State.AWAITING_APPROVAL
    assert d.manifest_settings.approvers == ("bob", "admin")
    (first,) = await events(cp, d)
    assert first.state is State.AWAITING_APPROVAL
    assert first.message.startswith("requested by alice: release 1.2; awaiting approval by ")
    assert "bob or admin until 1970-01-01 02:16:40 UTC" in first.message
    assert f"sami approve {d.id}" in (await get(cp, d)).status_message
    # It supersedes nothing while it waits, and no agent gets it.
    assert (await get(cp, queued)).state is State.QUEUED
    agent = await connect(cp, "a1")
    await tick(cp)
    assigned = [c.deployment.id for c in drain(agent) if isinstance(c, AssignCommand)]
    assert assigned == [queued.id]
    clock.t += 3600  # the first one's lease ran out: it is offered again, d still not
    await tick(cp)
    assigned = [c.deployment.id for c in drain(agent) if isinstance(c, AssignCommand)]
    assert assigned == [queued.id] and (await get(cp, d)).state is State.AWAITING_APPROVAL
    # Stage keeps no gate.
    assert (await deploy(cp)).state is State.QUEUED


async def test_the_requester_cannot_approve_another_approver_can_and_it_deploys(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    older = await deploy(cp, environment="production", ref=REF2)  # before the gate
    await require_approval(cp)
    d = await request(cp)
    for same in (ALICE, ALICE_2):  # the same token, or another token with her name
        with pytest.raises(PermissionDenied, match="another identity must approve it"):
            await cp.approvals.approve(same, d.id, "")
    with pytest.raises(PermissionDenied, match="may deploy only to stage"):
        await cp.approvals.approve(STAGE_ONLY, d.id, "")
    approved = await cp.approvals.approve(BOB, d.id, "checked the changelog")
    assert approved.state is State.QUEUED and approved.status_message == ""
    assert (await events(cp, d))[-1].message == "approved by bob: checked the changelog"
    # Entering the queue, it supersedes the older queued deployment (supersede rule).
    assert (await get(cp, older)).state is State.SUPERSEDED
    with pytest.raises(FailedPrecondition, match="is QUEUED, not AWAITING_APPROVAL"):
        await cp.approvals.approve(CAROL, d.id, "")
    agent = await connect(cp, "a1")
    await tick(cp)
    (cmd,) = drain(agent)
    assert isinstance(cmd, AssignCommand) and cmd.deployment.id == d.id
    await cp.reports.result(
        agent, d.id, cmd.deployment.lease_id, cmd.deployment.epoch, Outcome.SUCCEEDED, ""
    )
    assert await states(cp, d) == ["AWAITING_APPROVAL", "QUEUED", "ASSIGNED", "SUCCEEDED"]
    assert await audit_of(cp, d.id) == [
        ("deployment.create", "alice", "ok"),
        ("deployment.approve", "alice", "PERMISSION_DENIED"),
        ("deployment.approve", "alice", "PERMISSION_DENIED"),
        ("deployment.approve", "dave", "PERMISSION_DENIED"),
        ("deployment.approve", "bob", "ok"),
        ("deployment.approve", "carol", "FAILED_PRECONDITION"),
    ]


async def test_approvers_restrict_who_may_approve_admins_included(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    await require_approval(cp, "approvers: [carol]")
    d = await request(cp)
    for who in (BOB, ROOT):  # in scope, and an admin: not listed, so not approvers
        with pytest.raises(PermissionDenied, match="not among the approvers of web/production"):
            await cp.approvals.approve(who, d.id, "")
    assert (await cp.approvals.approve(CAROL, d.id, "")).state is State.QUEUED
    # A role listed lets every token of it approve.
    await require_approval(cp, "approvers: [admin]")
    d2 = await request(cp)
    with pytest.raises(PermissionDenied, match="not among the approvers"):
        await cp.approvals.approve(BOB, d2.id, "")
    assert (await cp.approvals.approve(ROOT, d2.id, "")).state is State.QUEUED
    # Without approvers, anyone who may deploy there (admins too) but the requester.
    await require_approval(cp)
    d3 = await request(cp, who=ROOT)
    assert (await cp.approvals.approve(ADMIN, d3.id, "")).state is State.QUEUED


async def test_reject_ends_it_cancelled_with_the_reason(env: tuple[ControlPlane, Clock]) -> None:
    cp, _ = env
    await require_approval(cp, "approvers: [carol]")
    d = await request(cp)
    with pytest.raises(InvalidArgument, match="reason"):
        await cp.approvals.reject(CAROL, d.id, "  ")
    with pytest.raises(PermissionDenied, match="only its approvers \\(carol\\), an admin"):
        await cp.approvals.reject(BOB, d.id, "no")
    rejected = await cp.approvals.reject(CAROL, d.id, "freeze until Monday")
    assert rejected.state is State.CANCELLED
    assert rejected.status_message == "rejected by carol: freeze until Monday"
    with pytest.raises(FailedPrecondition, match="is CANCELLED, not AWAITING_APPROVAL"):
        await cp.approvals.approve(CAROL, d.id, "")
    # The requester may withdraw a request (reject it), and cancel works as for queued work.
    mine = await request(cp)
    assert (await cp.approvals.reject(ALICE, mine.id, "wrong build")).state is State.CANCELLED
    other = await request(cp)
    assert (await cp.deployments.cancel(ALICE, other.id, "")).state is State.CANCELLED
    assert ("deployment.reject", "carol", "ok") in await audit_of(cp, d.id)


async def test_a_pending_approval_expires(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    await require_approval(cp, "approval_expires: 30m")
    d = await request(cp)
    clock.t += 1799
    assert not (await cp.approvals.expire()).events
    clock.t += 1
    with pytest.raises(FailedPrecondition, match="expired at"):
        await cp.approvals.approve(BOB, d.id, "")
    cp.publisher.apply(await cp.approvals.expire())
    ended = await get(cp, d)
    assert ended.state is State.CANCELLED
    assert ended.status_message.startswith("approval expired: nobody approved it within 30m")
    assert ("deployment.approval_expired", "sami-control", "ok") in await audit_of(cp, d.id)
    assert not (await cp.approvals.expire()).events  # ended once


async def test_the_default_expiry_is_a_day(env: tuple[ControlPlane, Clock]) -> None:
    cp, clock = env
    await require_approval(cp)
    d = await request(cp)
    assert d.manifest_settings.approval_expires == 24 * 3600
    clock.t += 24 * 3600
    await cp.approvals.expire()
    assert (await get(cp, d)).state is State.CANCELLED


async def test_a_rollback_of_a_gated_target_awaits_approval_too(
    env: tuple[ControlPlane, Clock],
) -> None:
    cp, _ = env
    agent = await connect(cp, "a1")
    good = await deploy(cp, environment="production")
    await tick(cp)
    (cmd,) = drain(agent)
    assert isinstance(cmd, AssignCommand)
    await cp.reports.result(
        agent, good.id, cmd.deployment.lease_id, cmd.deployment.epoch, Outcome.SUCCEEDED, ""
    )
    await require_approval(cp)
    back = await request(cp, rollback_of=good.id)
    assert back.state is State.AWAITING_APPROVAL and back.rollback_of == good.id


@dataclass
class HeardPeers:
    """Stands in for core/peers.py: what this replica would tell the others."""

    told: list[Notice] = field(default_factory=list)

    def tell(self, notice: Notice) -> None:
        self.told.append(notice)


async def test_an_approval_on_one_replica_is_dispatched_by_another(
    pg_database: PgDatabase,
) -> None:
    stores = [PostgresStore(pg_database.url, pool_size=2) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        one, two = (ControlPlane(s, Settings(), Clock()) for s in stores)
        await one.clusters.create(ADMIN, "c1", ["stage", "production"])
        await one.artifacts.register(ADMIN, ArtifactInput("web", ArtifactKind.IMAGE, REF, ""))
        await require_approval(one)
        agent_on_two = await connect(two, "a2", AGENT_C1)
        d = await request(one)
        two.publisher.apply(await two.leases.dispatch())
        assert drain(agent_on_two) == []
        heard = HeardPeers()
        one.publisher.peers = heard  # type: ignore[assignment]
        await one.approvals.approve(BOB, d.id, "")
        await one.store.durable()
        # The others hear of new work for c1 (their dispatch wakes), and find it in the store.
        assert any("c1" in n.work for n in heard.told)
        two.publisher.apply(await two.leases.dispatch())
        (cmd,) = drain(agent_on_two)
        assert isinstance(cmd, AssignCommand) and cmd.deployment.id == d.id
    finally:
        for s in stores:
            await s.close()
