"""Approvals (`approval: required` in a target's sami.yaml): a deployment of such a target
is created AWAITING_APPROVAL (core/deployments.py), is never dispatched while it waits, and
leaves by `sami approve` (→ QUEUED: then the normal path, supersede rules included), by
`sami reject` (→ CANCELLED, with the reason) or when nobody approved it in time (→
CANCELLED, checked by the control plane's background loop: `expire`).

Who may approve is `authz.require_approver`'s: another identity than the requester, allowed
by the manifest's `approvers`, with deploy scope on the target.
"""

from __future__ import annotations

from sami_common.durations import format_seconds
from sami_control.core import authz, validation
from sami_control.core.approval_rules import clock_text, expires_at
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.context import Context
from sami_control.core.deployments import Deployments
from sami_control.core.effects import Effects
from sami_control.core.errors import FailedPrecondition, InvalidArgument
from sami_control.core.locks import hold, key_lock
from sami_control.core.model import Deployment, Principal, Role, State
from sami_control.core.store import Tx
from sami_control.core.transitions import move

# Who the audit log names for what the control plane does by itself (an expiry).
CONTROL_PLANE = Principal(token_id="-", name="sami-control", role=Role.ADMIN, peer="local")


def _subject(self: Approvals, who: Principal, name: str, text: str) -> Subject:
    return Subject(who, name)


class Approvals:
    def __init__(self, ctx: Context, deployments: Deployments) -> None:
        self.ctx = ctx
        self.deployments = deployments

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("deployment.approve", _subject)
    async def approve(self, who: Principal, name: str, comment: str) -> Deployment:
        validation.text("comment", comment)
        now = self.ctx.clock()
        fx = Effects(wake=True)  # new work: this replica's dispatch, and the others' (bus)
        async with self.ctx.store.tx() as tx:
            d = await self._awaiting(tx, name, "approved")  # under its key's lock
            authz.require_approver(who, d)
            if now >= expires_at(d):
                raise FailedPrecondition(
                    f"the approval of deployment {d.id} expired at "
                    f"{clock_text(expires_at(d))}: request the deployment again"
                )
            msg = f"approved by {who.name}" + (f": {comment}" if comment else "")
            ev = move(d, State.QUEUED, now, msg, phase="approval")
            d.status_message = ""
            await tx.update_deployment(d)
            await self.ctx.publisher.store_event(tx, d, ev)
            fx.add(d, ev)
            await self.deployments.supersede_queued(tx, fx, d, now)
            await self.audit.ok(
                tx,
                who,
                "deployment.approve",
                d.id,
                detail=f"requested by {d.created_by}" + (f": {comment}" if comment else ""),
                service=d.service,
            )
        self.ctx.publisher.apply(fx)
        return d

    @audited("deployment.reject", _subject)
    async def reject(self, who: Principal, name: str, reason: str) -> Deployment:
        reason = validation.text("reason", reason).strip()
        if not reason:
            raise InvalidArgument("reason", "is required: say why the deployment is rejected")
        now = self.ctx.clock()
        fx = Effects()
        async with self.ctx.store.tx() as tx:
            d = await self._awaiting(tx, name, "rejected")
            authz.require_rejecter(who, d)
            ev = move(d, State.CANCELLED, now, f"rejected by {who.name}: {reason}", "approval")
            await tx.update_deployment(d)
            await self.ctx.publisher.store_event(tx, d, ev)
            fx.add(d, ev)
            await self.audit.ok(
                tx, who, "deployment.reject", d.id, detail=reason, service=d.service
            )
        self.ctx.publisher.apply(fx)
        return d

    async def _awaiting(self, tx: Tx, name: str, what: str) -> Deployment:
        """The deployment `name`, held under its key's lock and then its own (the order of
        core/locks.py: an approval supersedes the queued deployments of its key)."""
        found = await self.deployments.must_get(tx, name)
        await tx.lock(key_lock(*found.key))
        d = await self.deployments.must_get(tx, name, lock=True)
        if d.state is not State.AWAITING_APPROVAL:
            raise FailedPrecondition(
                f"deployment {d.id} is {d.state.name}, not AWAITING_APPROVAL: only a "
                f"deployment waiting for approval can be {what}"
            )
        return d

    async def expire(self) -> Effects:
        """End the pending approvals whose time ran out. Every replica runs it (from its
        background loop); each reads the deployment again under its lock, so one ends it."""
        now = self.ctx.clock()
        fx = Effects()
        async with self.ctx.store.tx() as tx:
            waiting = await tx.deployments_in_states([State.AWAITING_APPROVAL])
            due = sorted(d.id for d in waiting if now >= expires_at(d))
            for dep_id in due:
                d = await hold(tx, dep_id)
                if d is None or d.state is not State.AWAITING_APPROVAL:
                    continue
                waited = format_seconds(d.manifest_settings.approval_expires)
                ev = move(
                    d,
                    State.CANCELLED,
                    now,
                    f"approval expired: nobody approved it within {waited} "
                    f"(approval_expires of {d.manifest_folder or d.service})",
                    "approval",
                )
                await tx.update_deployment(d)
                await self.ctx.publisher.store_event(tx, d, ev)
                fx.add(d, ev)
                await self.audit.ok(
                    tx,
                    CONTROL_PLANE,
                    "deployment.approval_expired",
                    d.id,
                    detail=f"requested by {d.created_by}; not approved within {waited}",
                    service=d.service,
                )
        return fx
