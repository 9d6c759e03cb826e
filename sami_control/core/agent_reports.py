"""What agents report on their stream: acks, progress, results, heartbeats, preview
inventories and cron runs. A report is acted on only while the agent's token is valid and
only if the agent holds the lease it names (fencing); anything else is refused (audited) or
answered with Revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from sami_common import limits
from sami_control.core import validation
from sami_control.core.agents import Agents, principal_of
from sami_control.core.audit import Audit, Subject, audited
from sami_control.core.commands import (
    CronRunAckCommand,
    DoneCommand,
    HeartbeatAckCommand,
    HeldLease,
    RevokeCommand,
)
from sami_control.core.context import Context
from sami_control.core.cron_runs import CronRunInput, CronRuns
from sami_control.core.deployments import Deployments
from sami_control.core.dispatch import Leases
from sami_control.core.effects import Effects
from sami_control.core.errors import InvalidArgument, PermissionDenied
from sami_control.core.locks import hold, key_lock
from sami_control.core.model import (
    OUTCOME_STATE,
    CronRun,
    Deployment,
    DeploymentAction,
    EventType,
    Outcome,
    PreviewStack,
    State,
)
from sami_control.core.sessions import AgentSession
from sami_control.core.store import Tx
from sami_control.core.transitions import move, record

log = structlog.get_logger("sami.control")

STALE = "stale lease: not yours or no longer live"
# Revokes one heartbeat may queue (and log): the stale leases past these are answered on
# later heartbeats, which list them again until revoked.
MAX_REVOKES_PER_HEARTBEAT = 100
# Progress events stored per deployment: past these, progress still renews the lease but
# is not stored (a runaway agent cannot fill the database through one deployment).
MAX_PROGRESS_EVENTS = 10_000


def _about(self: AgentReports, session: AgentSession, target: Any = "", *_: Any) -> Subject:
    """A report's audit subject: the agent's token, and the deployment it names."""
    return Subject(principal_of(session), target if isinstance(target, str) else "")


class AgentReports:
    def __init__(
        self,
        ctx: Context,
        agents: Agents,
        leases: Leases,
        deployments: Deployments,
        cron_runs: CronRuns,
    ) -> None:
        self.ctx = ctx
        self.agents = agents
        self.leases = leases
        self.deployments = deployments
        self.cron_runs = cron_runs
        # Told of each deployment a result ended, once it is stored (LiveStatus judges the
        # target's drift again: core/controlplane.py wires it).
        self.on_result: Callable[[AgentSession, Deployment], Awaitable[None]] | None = None

    @property
    def audit(self) -> Audit:
        return self.ctx.audit

    @audited("agent.report", _about)
    async def ack(
        self, session: AgentSession, deployment_id: str, lease_id: str, epoch: int
    ) -> None:
        now = self._seen(session)
        fx = Effects()
        async with self.ctx.store.tx() as tx:
            d = await self._renewed(tx, fx, session, deployment_id, lease_id, epoch, now)
            if d is not None:
                await tx.update_deployment(d)
        self.ctx.publisher.apply(fx)

    @audited("agent.report", _about)
    async def progress(
        self,
        session: AgentSession,
        deployment_id: str,
        lease_id: str,
        epoch: int,
        sequence: int,
        phase: str,
        message: str,
    ) -> None:
        now = self._seen(session)
        settings = self.ctx.settings
        if not session.take_progress(
            now, settings.max_progress_per_second, settings.progress_burst
        ):
            _drop_progress(
                session, f"over {settings.max_progress_per_second:g} progress reports a second"
            )
            return
        if session.progress_dropped:
            log.warning(
                "progress_dropped",
                agent_id=session.agent_id,
                cluster=session.cluster,
                dropped=session.progress_dropped,
            )
            session.progress_dropped = 0
        # Cleaned, not refused: a refused report is lost, and the agent cannot know why.
        phase = limits.clean_text(phase, limits.MAX_PHASE) if phase else ""
        message = limits.clean_text(message, limits.MAX_PROGRESS_MESSAGE) if message else ""
        fx = Effects()
        async with self.ctx.store.tx() as tx:
            # Progress implies a lost ack, too: it renews the lease as an ack does.
            d = await self._renewed(tx, fx, session, deployment_id, lease_id, epoch, now)
            if d is None:
                return None
            new = sequence > d.agent_sequence  # else stored already (sent again)
            if new:
                d.agent_sequence = sequence
            if new and d.last_sequence >= MAX_PROGRESS_EVENTS:
                _drop_progress(session, f"deployment {d.id} has {MAX_PROGRESS_EVENTS} events")
            elif new:
                ev = record(d, EventType.PROGRESS, now, message=message, phase=phase)
                await self.ctx.publisher.store_event(tx, d, ev)
                fx.add(d, ev)
            await tx.update_deployment(d)
        self.ctx.publisher.apply(fx)

    @audited("agent.report", _about)
    async def result(
        self,
        session: AgentSession,
        deployment_id: str,
        lease_id: str,
        epoch: int,
        outcome: int,
        reason: str,
    ) -> None:
        """Store the lease's result and answer Done. A result is never refused for its text
        (cleaned and cut to limits.MAX_REASON here, as the agent does), and one whose
        outcome is not an outcome ends its deployment FAILED, saying so: a refused result
        would be lost, and its deployment would stay IN_PROGRESS for good (the agent keeps
        renewing the lease while it waits for Done)."""
        now = self._seen(session)
        reason = limits.clean_text(reason, limits.MAX_REASON) if reason else ""
        state = _outcome_state(outcome)
        if state is None:
            log.warning(
                "result_outcome_refused",
                agent_id=session.agent_id,
                deployment_id=deployment_id[:100],
                outcome=outcome,
            )
            reason = limits.clean_text(
                f"the agent reported no valid outcome ({outcome}); its result was refused"
                + (f": {reason}" if reason else ""),
                limits.MAX_REASON,
            )
            state = State.FAILED
        fx = Effects(wake=True)
        ended: Deployment | None = None
        async with self.ctx.store.tx() as tx:
            current = await hold(tx, deployment_id)
            if not _finished_by(session, current, lease_id):
                d = self._held(session, current, deployment_id, lease_id, epoch)
                if d is None:
                    return self._reject(session, deployment_id, lease_id, STALE)
                ev = move(d, state, now, reason or state.name.lower().replace("_", " "))
                await tx.update_deployment(d)
                await self.ctx.publisher.store_event(tx, d, ev)
                fx.add(d, ev)
                ended = d
            # else: a result we already stored, sent again after a reconnect.
        session.leases.discard(deployment_id)
        fx.send(session, DoneCommand(deployment_id, lease_id))
        self.ctx.publisher.apply(fx)
        if ended is not None and self.on_result is not None:
            try:
                await self.on_result(session, ended)
            except Exception:
                # The result is stored and Done is on its way: a drift judged again later
                # (the agent's next report) must not end the agent's stream.
                log.exception("result_hook_failed", deployment_id=deployment_id)

    @audited("agent.report", _about)
    async def heartbeat(self, session: AgentSession, held: list[HeldLease]) -> None:
        now = self._seen(session)
        if len(held) > limits.MAX_LEASES_PER_MESSAGE:
            # Refused whole, not cut: renewing some of the leases would let the others run
            # out while the agent believes it holds them.
            raise InvalidArgument(
                "heartbeat.leases",
                f"{len(held)} leases, more than {limits.MAX_LEASES_PER_MESSAGE}",
            )
        session.send(HeartbeatAckCommand())
        if not held:
            return
        settings = self.ctx.settings
        revokes = 0
        async with self.ctx.store.tx() as tx:
            # By id: several deployments' locks are always taken in one order (core/locks.py).
            for h in sorted(held, key=lambda h: h.deployment_id):
                current = await hold(tx, h.deployment_id)
                d = self._held(session, current, h.deployment_id, h.lease_id, h.epoch)
                if d is None:
                    if not _finished_by(session, current, h.lease_id):
                        revokes += 1
                        if revokes <= MAX_REVOKES_PER_HEARTBEAT:
                            self._reject(session, h.deployment_id, h.lease_id, STALE)
                    # else: its result crossed this heartbeat: Done is on its way.
                    continue
                ttl = settings.lease_ttl if d.state is State.IN_PROGRESS else settings.ack_timeout
                self.leases.lease_until(d, now + ttl)
                await tx.update_deployment(d)
        if revokes > MAX_REVOKES_PER_HEARTBEAT:
            log.warning(
                "revokes_deferred",
                agent_id=session.agent_id,
                cluster=session.cluster,
                stale=revokes,
                revoked=MAX_REVOKES_PER_HEARTBEAT,
            )

    @audited("agent.report", _about)
    async def inventory(self, session: AgentSession, stacks: list[PreviewStack]) -> list[str]:
        """Tear down the reported preview stacks whose pull request is not open any more.
        Returns the ids of the teardown deployments created."""
        now = self._seen(session)
        who = principal_of(session)
        fx = Effects(wake=True)
        created: list[str] = []
        async with self.ctx.store.tx() as tx:
            for st in stacks:
                if not _valid_preview(st):
                    log.warning(
                        "preview_inventory_ignored",
                        agent_id=session.agent_id,
                        stack=st.stack_name[:100],
                    )
                    continue
                await tx.lock(key_lock(st.service, "pull_request", st.pull_request))
                latest = await tx.latest_for_key(
                    st.service, "pull_request", st.pull_request, session.cluster
                )
                if latest is not None and self._preview_open(latest, now):
                    continue
                d = await self._teardown_orphan(tx, fx, session, st, latest)
                created.append(d.id)
                await self.audit.ok(
                    tx,
                    who,
                    "preview.teardown",
                    d.id,
                    detail=f"by agent {session.agent_id}: {d.reason}",
                    service=st.service,
                )
        self.ctx.publisher.apply(fx)
        return created

    async def _teardown_orphan(
        self,
        tx: Tx,
        fx: Effects,
        session: AgentSession,
        st: PreviewStack,
        latest: Deployment | None,
    ) -> Deployment:
        why = (
            f"preview stack {st.stack_name} has no open pull request "
            f"(last deployment {latest.id if latest else 'unknown to Sami'})"
        )
        template = latest or Deployment(
            id="",
            service=st.service,
            environment="pull_request",
            pull_request=st.pull_request,
            artifact_id="",
            cluster=session.cluster,
            deployment_type="swarm",
            stack_name=st.stack_name,
        )
        d = self.deployments.teardown_of(template, "sami (orphan reconciliation)", why)
        await self.deployments.enqueue(
            tx, fx, d, f"orphan preview found by agent {session.agent_id}", why
        )
        return d

    @audited(
        "agent.report",
        lambda self, session, report: _about(self, session, report.deployment_id[:100]),
    )
    async def cron_run(self, session: AgentSession, report: CronRunInput) -> CronRun:
        """Store a cron job's run (once per run_id) and acknowledge it to the agent. A run of
        another cluster's deployment is PERMISSION_DENIED (docs/cron.md)."""
        self._seen(session)
        run, created = await self.cron_runs.record(session.cluster, session.agent_id, report)
        if created:
            log.info(
                "cron_run",
                run_id=run.run_id,
                deployment_id=run.deployment_id,
                service=run.service,
                environment=run.environment,
                cluster=run.cluster,
                job=run.job,
                outcome=run.outcome.name,
                exit_code=run.exit_code,
                agent_id=session.agent_id,
            )
        # The agent forgets a run once acknowledged: only once it is stored.
        self.ctx.publisher.send(session, CronRunAckCommand(run.run_id))
        return run

    def _seen(self, session: AgentSession) -> float:
        """Every report: the agent's token must still be valid; it was seen now."""
        self.agents.check(session)
        now = self.ctx.clock()
        session.last_seen_at = now
        return now

    async def _renewed(
        self,
        tx: Tx,
        fx: Effects,
        session: AgentSession,
        deployment_id: str,
        lease_id: str,
        epoch: int,
        now: float,
    ) -> Deployment | None:
        """The deployment, its lease renewed, if `session` holds this lease on it; else None,
        after telling the agent to let go."""
        d = self._held(session, await hold(tx, deployment_id), deployment_id, lease_id, epoch)
        if d is None:
            self._reject(session, deployment_id, lease_id, STALE)
            return None
        await self.leases.renew(tx, fx, d, session, now)
        return d

    @staticmethod
    def _held(
        session: AgentSession, d: Deployment | None, deployment_id: str, lease_id: str, epoch: int
    ) -> Deployment | None:
        """The deployment if `session` holds this lease on it, else None. Another cluster's
        deployment is a permission error."""
        if d is not None and d.cluster != session.cluster:
            raise PermissionDenied(
                f"deployment {deployment_id} belongs to another cluster than {session.cluster!r}"
            )
        if (
            d is None
            or d.state.terminal
            or not d.state.active
            or d.agent_id != session.agent_id
            or d.lease_id != lease_id
            or d.epoch != epoch
        ):
            return None
        return d

    def _reject(self, session: AgentSession, deployment_id: str, lease_id: str, why: str) -> None:
        """Tell the agent to let go of a lease it does not hold (any more)."""
        session.leases.discard(deployment_id)
        self.ctx.publisher.send(session, RevokeCommand(deployment_id, lease_id, why))
        log.warning(
            "report_rejected",
            agent_id=session.agent_id,
            deployment_id=deployment_id,
            lease_id=lease_id,
            reason=why,
        )

    def _preview_open(self, latest: Deployment, now: float) -> bool:
        if not latest.state.terminal:
            return True  # being deployed or torn down right now
        if latest.action is DeploymentAction.TEARDOWN:
            return False  # torn down (or the teardown failed): the stack should not exist
        return now - latest.created_at < self.ctx.settings.preview_ttl


def _drop_progress(session: AgentSession, why: str) -> None:
    """A progress report is not stored: said in the log once per run of drops (counted,
    and the count logged when a report is taken again)."""
    session.progress_dropped += 1
    if session.progress_dropped == 1:
        log.warning(
            "progress_not_stored",
            agent_id=session.agent_id,
            cluster=session.cluster,
            reason=why,
        )


def _outcome_state(outcome: int) -> State | None:
    try:
        return OUTCOME_STATE.get(Outcome(outcome))
    except ValueError:
        return None


def _finished_by(session: AgentSession, d: Deployment | None, lease_id: str) -> bool:
    """Whether this agent's own lease on `d` ended with a result already stored."""
    return (
        d is not None
        and d.state.terminal
        and d.lease_id == lease_id
        and d.cluster == session.cluster
        and d.agent_id == session.agent_id
    )


def _valid_preview(st: PreviewStack) -> bool:
    try:
        validation.name("stack.service", st.service, "service name")
        validation.pull_request("stack.pull_request", "pull_request", st.pull_request)
    except InvalidArgument:
        return False
    return st.stack_name == f"pr-{st.pull_request}_{st.service}"
