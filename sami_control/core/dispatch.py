"""Leases and dispatch: queued work is offered to connected agents of its cluster as a
lease (oldest first, at most one active deployment per service+environment+PR); a lease is
renewed by the holder's ack, heartbeats and progress, and one that runs out is offered again
with a new attempt, epoch and lease id (fencing: reports on an old lease change nothing).

Every lease deadline is set through `lease_until`, so the background loop (see
core/controlplane.py) knows when the earliest one runs out and sleeps until then.
"""

from __future__ import annotations

from sami_control.core import secrets
from sami_control.core.artifacts import Artifacts
from sami_control.core.commands import AssignCommand, RevokeCommand
from sami_control.core.context import Context
from sami_control.core.effects import Effects
from sami_control.core.ids import new_id
from sami_control.core.locks import hold, key_lock
from sami_control.core.manifest_catalog import ManifestCatalog
from sami_control.core.model import Deployment, State
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.store import Tx
from sami_control.core.transitions import move

LIVE = (State.ASSIGNED, State.IN_PROGRESS)


class Leases:
    def __init__(
        self,
        ctx: Context,
        sessions: Sessions,
        artifacts: Artifacts,
        manifests: ManifestCatalog,
    ) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.artifacts = artifacts
        self.manifests = manifests
        # No live lease runs out before this (the loop skips the lease scan until then).
        self.deadline = 0.0

    async def give_grace_after_restart(self) -> None:
        """Agents cannot renew while the control plane was down: give each live lease
        time to come back. (With several replicas, the agents of this one renew on the
        others meanwhile; the grace only delays the expiry of a lease whose agent is gone
        for good.)"""
        now = self.ctx.clock()
        grace = now + self.ctx.settings.restart_grace
        async with self.ctx.store.tx() as tx:
            live = await tx.deployments_in_states(list(LIVE))
            for found in sorted(live, key=lambda d: d.id):
                d = await hold(tx, found.id)
                if d is not None and d.state in LIVE:
                    self.lease_until(d, max(d.lease_expires, grace))
                    await tx.update_deployment(d)

    def lease_until(self, d: Deployment, expires: float) -> None:
        """Every lease deadline is set here, so the loop knows the earliest one."""
        d.lease_expires = expires
        self.deadline = min(self.deadline, expires)

    async def renew(
        self, tx: Tx, fx: Effects, d: Deployment, session: AgentSession, now: float
    ) -> None:
        """An ack or a report from the lease holder: renew the lease, and an ASSIGNED
        deployment is now IN_PROGRESS (the agent has it)."""
        self.lease_until(d, now + self.ctx.settings.lease_ttl)
        if d.state is State.ASSIGNED:
            ev = move(d, State.IN_PROGRESS, now, f"accepted by agent {session.agent_id}")
            await self.ctx.publisher.store_event(tx, d, ev)
            fx.add(d, ev)

    async def requeue(self, tx: Tx, fx: Effects, d: Deployment, now: float, why: str) -> None:
        """The lease holder lost the work: offer it again (attempt + 1), or end it when it
        was being cancelled or its attempts ran out."""
        revoke = RevokeCommand(d.id, d.lease_id, why)
        old_session = self.sessions.get(d.cluster, d.agent_id)
        if old_session is not None:
            old_session.leases.discard(d.id)
            # Sent once the requeue is stored, like every command: if its commit fails the
            # lease still stands, and the agent must keep the work.
            fx.send(old_session, revoke)
        # The holder's stream may be on another replica.
        fx.tell_agent(d.cluster, d.agent_id, revoke)
        if d.cancel_requested:
            ev = move(d, State.CANCELLED, now, f"cancelled ({why} while cancelling)")
        elif d.attempt >= self.ctx.settings.max_attempts:
            ev = move(d, State.FAILED, now, f"gave up after {d.attempt} attempts; last: {why}")
        else:
            ev = move(
                d,
                State.QUEUED,
                now,
                f"attempt {d.attempt} on agent {d.agent_id} lost: {why}; offering again",
            )
        await tx.update_deployment(d)
        await self.ctx.publisher.store_event(tx, d, ev)
        fx.add(d, ev)

    async def expire(self) -> Effects:
        """Requeue the deployments whose lease ran out, and note when the next live lease
        runs out, so the loop sleeps until then (it never sleeps more than 1 s, so leases
        granted or renewed after this scan are covered too)."""
        now = self.ctx.clock()
        fx = Effects()
        deadline = now + 1.0
        async with self.ctx.store.tx() as tx:
            live = await tx.deployments_in_states(list(LIVE))
            expired = []
            for d in live:
                if d.lease_expires and d.lease_expires <= now:
                    expired.append(d.id)
                elif d.lease_expires:
                    deadline = min(deadline, d.lease_expires)
            # Each is read again under its lock: another replica's sweep may have requeued
            # it, or its holder renewed it there, since the scan.
            for dep_id in sorted(expired):
                held = await hold(tx, dep_id)
                if held is None or held.state not in LIVE or not held.lease_expires:
                    continue
                if held.lease_expires > now:
                    deadline = min(deadline, held.lease_expires)
                    continue
                what = "not acknowledged" if held.state is State.ASSIGNED else "lease expired"
                await self.requeue(tx, fx, held, now, what)
                fx.wake = True
        self.deadline = deadline
        return fx

    async def dispatch(self) -> Effects:
        """Offer queued work to connected agents: oldest first, one active per key."""
        fx = Effects()
        if not self.sessions:
            return fx
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            queued = await tx.deployments_in_states([State.QUEUED])
            if not queued:
                return fx  # most wake-ups under load: nothing waits
            busy = await tx.active_keys()
            locks = [lk for lk in await tx.list_target_locks() if lk.live(now)]
            by_cluster = self.sessions.open_by_cluster()
            for d in queued:
                if d.key in busy:
                    continue
                if any(lk.covers(d.service, d.environment) for lk in locks):
                    continue  # a lock taken after it was queued: it waits for the unlock
                candidates = [
                    s for s in by_cluster.get(d.cluster, ()) if d.deployment_type in s.capabilities
                ]
                if not candidates:
                    continue
                s = min(candidates, key=lambda s: (len(s.leases), s.agent_id))
                # The scan may be stale: another replica may have dispatched on this key
                # since. Under the key's lock, this must still be the key's oldest queued
                # deployment, and nothing of the key live (core/locks.py).
                busy.add(d.key)
                await tx.lock(key_lock(*d.key))
                fresh = await hold(tx, d.id)
                if fresh is None or fresh.state is not State.QUEUED:
                    continue
                if await tx.key_busy(*d.key):
                    continue
                oldest = await tx.queued_of_key(*d.key)
                if oldest and oldest[0].id != d.id:
                    continue
                await self._assign(tx, fx, fresh, s, now)
        return fx

    async def _assign(
        self, tx: Tx, fx: Effects, d: Deployment, s: AgentSession, now: float
    ) -> None:
        d.attempt += 1
        d.epoch += 1
        d.lease_id = new_id("lease")
        d.agent_id = s.agent_id
        d.agent_sequence = 0
        self.lease_until(d, now + self.ctx.settings.ack_timeout)
        ev = move(d, State.ASSIGNED, now, f"assigned to agent {s.agent_id} (attempt {d.attempt})")
        await tx.update_deployment(d)
        await self.ctx.publisher.store_event(tx, d, ev)
        fx.add(d, ev)
        art = await self.artifacts.by_id(tx, d.artifact_id) if d.artifact_id else None
        s.leases.add(d.id)
        files = (
            await self.manifests.folder_files(tx, d.manifest_revision, d.manifest_folder)
            if d.manifest_revision
            else {}
        )
        payloads = tuple(await secrets.payloads(tx, d))
        fx.send(
            s, AssignCommand(d, art, self.ctx.settings.lease_ttl, files=files, secrets=payloads)
        )
