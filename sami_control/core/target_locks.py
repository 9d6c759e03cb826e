"""Target locks (`sami lock`): a brake on deployments to an environment, or to one service
in it. While a lock holds, creating a deployment to its target is refused at once (in
create's transaction, after its key lock: core/deployments.py) and queued deployments of
the target are not dispatched (core/dispatch.py); an expired lock stops applying by itself.

Admins and deployers whose scope covers the target may lock it, and unlock the locks they
took; an admin may break anybody's lock (audited as `lock.break`).
"""

from __future__ import annotations

from sami_control.core import authz, validation
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.effects import Effects
from sami_control.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sami_control.core.model import Principal, Role, TargetLock
from sami_control.core.store import Tx

# A lock that outlives a quarter is a forgotten one: say so when it is taken.
MAX_TTL = 90 * 24 * 3600.0


def _row_lock(environment: str, service: str) -> str:
    """The named lock (Tx.lock) of one lock row: replicas locking one target take turns.
    Taken alone in its transaction, so it has no place in core/locks.py's order."""
    return f"target-lock:{environment}/{service}"


def _target(environment: str, service: str) -> str:
    return f"{service or '*'}/{environment}"


def _lock_subject(
    self: TargetLocks, who: Principal, environment: str, service: str, *rest: object
) -> Subject:
    return Subject(who, _target(environment, service), service)


def describe(lock: TargetLock) -> str:
    """`production (every service) is locked by alice: <reason>`: what a refusal says."""
    what = (
        f"{lock.service} in {lock.environment}"
        if lock.service
        else (f"{lock.environment} (every service)")
    )
    return f"{what} is locked by {lock.holder}: {lock.reason}"


def refusal(lock: TargetLock) -> FailedPrecondition:
    unlock = f"sami unlock --env {lock.environment}" + (
        f" --service {lock.service}" if lock.service else ""
    )
    return FailedPrecondition(
        f"{describe(lock)}; deployments to it are refused until `{unlock}` (or the lock "
        "expires); `sami deploy --wait-lock` waits for it"
    )


async def covering(tx: Tx, service: str, environment: str, now: float) -> TargetLock | None:
    """The live lock that covers service+environment, if any (the service's own first)."""
    for svc in (service, ""):
        lock = await tx.get_target_lock(environment, svc)
        if lock is not None and lock.live(now):
            return lock
    return None


def require_lock_scope(who: Principal, environment: str, service: str) -> None:
    """Admins lock anything; a deployer what it may deploy to. A deployer scoped to some
    services locks those services, not the whole environment (that would stop the others)."""
    authz.require(who, Action.DEPLOY)
    if who.role is Role.ADMIN:
        return
    if who.environments and environment not in who.environments:
        raise PermissionDenied(
            f"token {who.name!r} may deploy only to {', '.join(who.environments)}, so it may "
            f"not lock or unlock {environment!r}"
        )
    if who.services and service not in who.services:
        raise PermissionDenied(
            f"token {who.name!r} may deploy only {', '.join(who.services)}, so it may lock "
            f"or unlock only those (with --service), not {_target(environment, service)}"
        )


class TargetLocks:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @staticmethod
    def _check_target(environment: str, service: str) -> tuple[str, str]:
        env = validation.environment("environment", environment)
        if service:
            validation.name("service", service, "service name")
        return env, service

    @audited("lock.create", _lock_subject)
    async def lock(
        self, who: Principal, environment: str, service: str, reason: str, ttl: float
    ) -> TargetLock:
        env, service = self._check_target(environment, service)
        if not reason.strip():
            raise InvalidArgument("reason", "say why the target is locked (--reason)")
        validation.text("reason", reason)
        if not 0 <= ttl <= MAX_TTL:
            raise InvalidArgument("ttl", "must be between 0 (no expiry) and 90 days")
        require_lock_scope(who, env, service)
        now = self.ctx.clock()
        lock = TargetLock(
            environment=env,
            service=service,
            reason=reason,
            holder=who.name,
            holder_token=who.token_id,
            created_at=now,
            expires_at=now + ttl if ttl else 0.0,
        )
        async with self.ctx.store.tx() as tx:
            await tx.lock(_row_lock(env, service))
            held = await tx.get_target_lock(env, service)
            if held is not None and held.live(now):
                raise AlreadyExists(f"{describe(held)} (`sami locks` shows since when)")
            await tx.put_target_lock(lock)
            await self.audit.ok(tx, who, "lock.create", lock.target, detail=reason, service=service)
        return lock

    @audited("lock.delete", _lock_subject)
    async def unlock(self, who: Principal, environment: str, service: str) -> TargetLock:
        env, service = self._check_target(environment, service)
        require_lock_scope(who, env, service)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            await tx.lock(_row_lock(env, service))
            held = await tx.get_target_lock(env, service)
            if held is None or not held.live(now):
                raise NotFound(f"{_target(env, service)} is not locked; `sami locks` lists locks")
            action = "lock.delete"
            if held.holder_token != who.token_id:
                if who.role is not Role.ADMIN:
                    raise PermissionDenied(
                        f"{describe(held)}; only its holder or an admin (who breaks it) may "
                        "unlock it"
                    )
                action = "lock.break"
            await tx.delete_target_lock(env, service)
            await self.audit.ok(
                tx,
                who,
                action,
                held.target,
                detail=f"held by {held.holder}: {held.reason}",
                service=service,
            )
        # Queued deployments of the target may go now.
        self.ctx.publisher.apply(Effects(wake=True))
        return held

    async def list(self, who: Principal, environment: str, service: str) -> list[TargetLock]:
        """The locks that hold now, oldest first (of `environment` / covering `service`)."""
        authz.require(who, Action.READ)
        if environment:
            validation.environment("environment", environment)
        if service:
            validation.name("service", service, "service name")
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            rows = await tx.list_target_locks(environment)
        return [r for r in rows if r.live(now) and (not service or r.service in ("", service))]
