"""Live status and drift (docs/status.md): what the services Sami deployed run now, as their
cluster's agent reports it (`LiveStatus` on the agent stream), and whether that still is
what Sami deployed.

Rows live in the store (one per cluster, stack and swarm service), so that every replica
answers GetStatus alike; a report writes only the rows whose state changed, so an idle
swarm costs one small write per cluster and full report (the report time). Drift is decided
when a report arrives (and shown at read time for the reasons that need a grace period to
pass): it starts a drift record (`drift_reason`, `drift_since`), written to the audit log as
`drift.detected`, and ends with `drift.healed` when live agrees again. While a deployment of
the target is in flight nothing is judged: its changes are Sami's own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace

import structlog

from sami_control.core import authz, validation
from sami_control.core.agents import Agents, principal_of
from sami_control.core.authz import Action
from sami_control.core.context import Context
from sami_control.core.deployments import Deployments
from sami_control.core.errors import DomainError, Unauthenticated
from sami_control.core.manifest_catalog import ManifestCatalog
from sami_control.core.model import (
    AuditEntry,
    Deployment,
    DeploymentAction,
    LiveServiceState,
    Principal,
    Role,
    State,
)
from sami_control.core.requests import DeploymentInput
from sami_control.core.sessions import AgentSession, Sessions
from sami_control.core.store import Tx
from sami_control.core.streams import Streams
from sami_manifests import ON_DRIFT_REDEPLOY

log = structlog.get_logger("sami.live")

# An agent sends a full report every 60 s (its --status-interval): a cluster not heard of
# for this long, with no agent connected here, is stale.
STALE_AFTER = 150.0
# Watchers look at the store at least this often (other replicas' reports).
WATCH_RECHECK = 2.0
# The agent's outside_change for a hand-made scale: "replicas 3 -> 1".
_SCALED = re.compile(r"replicas (\d+) -> \d+")
# What the audit log names the drift records after.
DETECTED, HEALED = "drift.detected", "drift.healed"
# The most drift records one call answers, and the audit entries read to find them (the
# newest of the service's; older records are in `sami audit`).
DRIFT_RECORDS = 50
DRIFT_AUDIT_READ = 1000
# Who asks for the deployments of `on_drift: redeploy` (their created_by, the audit log's
# token name).
HEALER = Principal("", "sami (drift)", Role.ADMIN)


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab` (12 hex digits), the digest as `status` shows it."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def running_digest(image: str) -> str:
    """The digest of an image reference pinned by digest (`repo:tag@sha256:…`), else ""."""
    return image.rpartition("@")[2] if "@" in image else ""


def degraded(row: LiveServiceState) -> bool:
    return row.running_replicas < row.desired_replicas or row.unhealthy_tasks > 0


def drift_reason(row: LiveServiceState, now: float, grace: float) -> str:
    """Why `row` differs from what Sami deployed, "" if it does not. The reason starts with
    its kind: removed, image, replicas, spec, unhealthy."""
    if row.removed:
        return "removed: the service is gone from the swarm"
    running = running_digest(row.image)
    if row.label_digest and running != row.label_digest:
        runs = short_digest(running) if running else row.image
        return (
            f"image: runs {runs}, Sami deployed {short_digest(row.label_digest)} "
            f"(deployment {row.deployment_id})"
        )
    if row.deployed_replicas and row.desired_replicas != row.deployed_replicas:
        return (
            f"replicas: scaled to {row.desired_replicas} outside Sami "
            f"(Sami deployed {row.deployed_replicas})"
        )
    if "spec" in row.outside_change.split(", "):
        # Swarm keeps one previous spec only: a change undone by hand still differs from
        # it; a deployment by Sami ends this drift.
        return "spec: changed outside Sami (not the image or the replicas)"
    if row.degraded_since and now - row.degraded_since >= grace:
        lasted = f"for {now - row.degraded_since:.0f} s"
        if row.running_replicas < row.desired_replicas:
            return f"replicas: {row.running_replicas}/{row.desired_replicas} running {lasted}"
        return f"unhealthy: {row.unhealthy_tasks} task(s) failing their health check {lasted}"
    return ""


def deployed_replicas(row: LiveServiceState, before: LiveServiceState | None) -> int:
    """What Sami deployed of `row`'s replicas: kept while the deployment label stays; for a
    label seen first, the spec's (or, if the agent says it was scaled by hand, the count
    before that)."""
    if before is not None and before.deployment_id == row.deployment_id:
        return before.deployed_replicas
    m = _SCALED.search(row.outside_change)
    return int(m.group(1)) if m else row.desired_replicas


def _target(row: LiveServiceState) -> str:
    """The audit target of a drift record: `service[#pr]/environment/stack_service`."""
    pr = f"#{row.pull_request}" if row.pull_request else ""
    return f"{row.service}{pr}/{row.environment}/{row.stack_name}_{row.swarm_service}"


@dataclass(frozen=True)
class DriftRecord:
    """One drift of a swarm service of a target: why, from when, to when (0: goes on)."""

    service: str
    environment: str
    pull_request: int
    swarm_service: str  # `stack_service`; "" in records audited before it was named
    reason: str
    started: float
    ended: float = 0.0


def _record_key(target: str) -> tuple[str, str, int, str] | None:
    """(service, environment, pull request, swarm service) of a drift audit target."""
    head, _, rest = target.partition("/")
    environment, _, swarm_service = rest.partition("/")
    service, _, pr = head.partition("#")
    if not environment or (pr and not pr.isdigit()):
        return None
    return service, environment, int(pr or 0), swarm_service


def drift_records(entries: list[AuditEntry]) -> list[DriftRecord]:
    """The drift records told by `drift.detected` / `drift.healed` audit entries (any
    order), newest first: each detected opens a record, the next healed of the same swarm
    service ends it. A healed whose start is older than the entries read is left out."""
    open_records: dict[tuple[str, str, int, str], DriftRecord] = {}
    done: list[DriftRecord] = []
    for e in sorted(entries, key=lambda e: e.seq):
        key = _record_key(e.target)
        if key is None:
            continue
        if e.action == DETECTED:
            previous = open_records.pop(key, None)
            if previous is not None:  # two starts in a row: the first ended unrecorded
                done.append(previous)
            open_records[key] = DriftRecord(*key, reason=e.detail, started=e.time)
        elif e.action == HEALED and key in open_records:
            done.append(replace(open_records.pop(key), ended=e.time))
    return sorted([*done, *open_records.values()], key=lambda r: r.started, reverse=True)


def _same(a: LiveServiceState, b: LiveServiceState) -> bool:
    """Equal but for the report time: a row that need not be written again."""
    return replace(a, reported_at=0.0) == replace(b, reported_at=0.0)


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `sami status`: the live row, with what the store knows about it."""

    live: LiveServiceState
    artifact_name: str
    deploy_time: float
    drift_reason: str
    drift_since: float
    stale: bool
    report_time: float

    @property
    def health(self) -> str:
        if self.live.removed:
            return "removed"
        if self.live.update_state in ("updating", "rollback_started"):
            return "updating"
        return "degraded" if degraded(self.live) else "healthy"


class LiveStatus:
    def __init__(
        self,
        ctx: Context,
        agents: Agents,
        sessions: Sessions,
        shared_store: Callable[[], bool],
        deployments: Deployments,
        manifests: ManifestCatalog,
        streams: Streams,
    ) -> None:
        self.ctx = ctx
        self.agents = agents
        self.sessions = sessions
        self._shared_store = shared_store
        self.deployments = deployments
        self.manifests = manifests
        self.streams = streams
        # When a self-heal was last requested here, per target (the store has the rest).
        self._healed_at: dict[tuple[str, str, int], float] = {}
        # Set whenever a report here changed a row: wakes the watchers of this replica.
        self._changed = asyncio.Event()
        # (cluster, service, environment, pull request) -> its drifted rows (stack, swarm
        # service), as settled here: a deployment that ends judges its target again only
        # when something of it drifted (deployment_ended), not on every result. The
        # cluster's agent sends its reports and its results on one stream, to one replica;
        # after a restart its full report at connect settles every row again.
        self._drifting: dict[tuple[str, str, str, int], set[tuple[str, str]]] = {}

    # -- agents' reports ---------------------------------------------------------------

    async def report(
        self, session: AgentSession, full: bool, services: list[LiveServiceState]
    ) -> None:
        """Store what changed in the agent's report and decide drift. `services` carry the
        reported fields; the target fields are filled here from the deployment label."""
        self.agents.check(session)
        now = self.ctx.clock()
        session.last_seen_at = now
        cluster = session.cluster
        who = principal_of(session)
        changed = False
        drifted: list[LiveServiceState] = []
        async with self.ctx.store.tx() as tx:
            known = await self._known(tx, cluster, full, services)
            # One read of what Sami is changing right now, for every row of the report.
            busy = await tx.active_keys()
            seen: set[tuple[str, str]] = set()
            for reported in services:
                key = (reported.stack_name, reported.swarm_service)
                seen.add(key)
                before = known.get(key)
                row = await self._targeted(
                    tx, replace(reported, cluster=cluster, reported_at=now), before
                )
                if row is not None:
                    changed |= await self._settle(tx, who, row, before, now, busy, drifted)
            if full:
                for key, before in known.items():
                    if key not in seen and not before.removed:
                        gone = replace(before, removed=True, reported_at=now)
                        changed |= await self._settle(tx, who, gone, before, now, busy, drifted)
                await tx.put_live_report_time(cluster, now)
        if changed:
            self._wake_watchers()
        for row in drifted:
            await self._heal(row, now)

    async def deployment_ended(self, session: AgentSession, d: Deployment) -> None:
        """A deployment of a target ended: judge the target's rows again now, from what
        the agent last reported. A drift the deployment healed ends now (and is audited),
        not with the agent's next report of a change, which may be its full report a
        minute later: its reports during the rollout were not judged (Sami's own changes)."""
        key = (d.service, d.environment, d.pull_request)
        if (d.cluster, *key) not in self._drifting:
            return  # nothing of the target drifted: nothing a deployment could heal
        now = self.ctx.clock()
        changed = False
        async with self.ctx.store.tx() as tx:
            busy = await tx.active_keys()
            if key in busy:
                return  # the target's next deployment is on its way: it will judge
            who = principal_of(session)
            for row in await tx.list_live_services(d.cluster):
                if (row.service, row.environment, row.pull_request) == key:
                    changed |= await self._settle(tx, who, row, row, now, busy, [])
        if changed:
            self._wake_watchers()

    @staticmethod
    async def _known(
        tx: Tx, cluster: str, full: bool, services: list[LiveServiceState]
    ) -> dict[tuple[str, str], LiveServiceState]:
        """The stored rows the report is compared with: every row of the cluster for a full
        report (those it no longer has were removed), only the reported services' rows for a
        report of changes (most name one service; a cluster may have hundreds)."""
        if full:
            rows = await tx.list_live_services(cluster)
        else:
            keys = {(s.stack_name, s.swarm_service) for s in services}
            found = [await tx.get_live_service(cluster, *key) for key in sorted(keys)]
            rows = [r for r in found if r is not None]
        return {(r.stack_name, r.swarm_service): r for r in rows}

    async def _targeted(
        self, tx: Tx, row: LiveServiceState, before: LiveServiceState | None
    ) -> LiveServiceState | None:
        """`row` with its Sami target, from the deployment its label names (None: a label
        no deployment of this control plane has, or of another cluster: not ours to show)."""
        if before is not None and before.deployment_id == row.deployment_id:
            return replace(
                row,
                service=before.service,
                environment=before.environment,
                pull_request=before.pull_request,
            )
        d = await tx.get_deployment(row.deployment_id) if row.deployment_id else None
        if d is None or d.cluster != row.cluster:
            return None
        return replace(
            row, service=d.service, environment=d.environment, pull_request=d.pull_request
        )

    async def _settle(
        self,
        tx: Tx,
        who: Principal,
        row: LiveServiceState,
        before: LiveServiceState | None,
        now: float,
        busy: set[tuple[str, str, int]],
        drifted: list[LiveServiceState],
    ) -> bool:
        """Decide `row`'s drift, audit where it starts or ends, store it if it changed.
        Returns whether anything was written."""
        row = replace(row, deployed_replicas=deployed_replicas(row, before))
        if degraded(row) and not row.removed:
            since = before.degraded_since if before is not None else 0.0
            row = replace(row, degraded_since=since or now)
        else:
            row = replace(row, degraded_since=0.0)
        if row.removed and await self._removed_by_sami(tx, row):
            await tx.delete_live_service(row.cluster, row.stack_name, row.swarm_service)
            self._note_drift(row, drifting=False)
            return True
        was = before.drift_reason if before is not None else ""
        if (row.service, row.environment, row.pull_request) in busy:
            # Sami is changing it right now: keep the drift as it was until that ends.
            row = replace(row, drift_reason=was, drift_since=before.drift_since if before else 0.0)
        else:
            reason = drift_reason(row, now, self.ctx.settings.drift_grace)
            since = (before.drift_since if was and before is not None else now) if reason else 0.0
            row = replace(row, drift_reason=reason, drift_since=since)
            if reason and not was:
                await self.ctx.audit.ok(
                    tx, who, DETECTED, _target(row), detail=reason, service=row.service
                )
                log.warning("drift_detected", target=_target(row), reason=reason)
            elif was and not reason:
                await self.ctx.audit.ok(
                    tx, who, HEALED, _target(row), detail=f"was: {was}", service=row.service
                )
                log.info("drift_healed", target=_target(row), was=was)
            if reason:
                drifted.append(row)
        self._note_drift(row, drifting=bool(row.drift_reason))
        if before is not None and _same(before, row):
            return False
        await tx.put_live_service(row)
        return True

    def _note_drift(self, row: LiveServiceState, drifting: bool) -> None:
        """Keep `_drifting` (the targets with a drifted row, as this replica last settled
        them) true for `row`."""
        target = (row.cluster, row.service, row.environment, row.pull_request)
        rows = self._drifting.get(target)
        if drifting:
            self._drifting.setdefault(target, set()).add((row.stack_name, row.swarm_service))
        elif rows is not None:
            rows.discard((row.stack_name, row.swarm_service))
            if not rows:
                del self._drifting[target]

    async def _heal(self, row: LiveServiceState, now: float) -> None:
        """`on_drift: redeploy`: deploy the target's last SUCCEEDED artifact again, at most
        once per interval, never while a deployment of the target is queued or in flight;
        Deployments.create refuses a quarantined digest (and a locked target) itself."""
        key = (row.service, row.environment, row.pull_request)
        interval = self.ctx.settings.drift_redeploy_interval
        if now - self._healed_at.get(key, -interval) < interval:
            return
        async with self.ctx.store.tx() as tx:
            ours = await tx.get_deployment(row.deployment_id)
            if ours is None:
                return
            try:
                resolved = await self.manifests.resolve(
                    tx, row.service, ours.deployment_type, row.environment
                )
            except DomainError:
                return  # no manifest for it any more: nothing to heal with
            if resolved.manifest.on_drift != ON_DRIFT_REDEPLOY:
                return
            if await tx.key_busy(*key) or await tx.queued_of_key(*key):
                return
            latest = await tx.latest_for_key(*key)
            if latest is not None and latest.state is State.AWAITING_APPROVAL:
                return  # a request waits for its approval: another would only pile up
            if (
                latest is not None
                and latest.created_by == HEALER.name
                and now - latest.created_at < interval
            ):
                return  # another replica healed it a moment ago
            good = next(
                (
                    d
                    for d in await tx.finished_deploys_of_key(*key, 100)
                    if d.state is State.SUCCEEDED and d.artifact_id
                ),
                None,
            )
        if good is None:
            return
        self._healed_at[key] = now
        request = DeploymentInput(
            service=row.service,
            environment=row.environment,
            artifact=good.artifact_id,
            pull_request=row.pull_request,
            reason=f"on_drift: redeploy ({row.drift_reason})",
            deployment_type=ours.deployment_type,
        )
        try:
            d = await self.deployments.create(HEALER, request)
        except DomainError as exc:
            log.warning("drift_redeploy_refused", target=_target(row), error=exc.message)
            return
        log.warning("drift_redeploy", target=_target(row), deployment_id=d.id, of=good.id)

    @staticmethod
    async def _removed_by_sami(tx: Tx, row: LiveServiceState) -> bool:
        """Whether Sami itself removed the service: its target's newest deployment is a
        teardown (a closed preview) or deploys another stack, or the deployment that made
        the service did not succeed (a new service of a failed rollout is removed)."""
        latest = await tx.latest_for_key(row.service, row.environment, row.pull_request)
        if latest is None:
            return True
        if latest.action is DeploymentAction.TEARDOWN or latest.stack_name != row.stack_name:
            return True
        made_by = await tx.get_deployment(row.deployment_id)
        return made_by is None or made_by.state in (
            State.FAILED,
            State.ROLLED_BACK,
            State.CANCELLED,
        )

    # -- reading -----------------------------------------------------------------------

    async def get(
        self, who: Principal, service: str, environment: str, *, deployments: bool = True
    ) -> list[ServiceStatus]:
        """Every live row the caller may see (of `service` / `environment`), by service,
        environment, pull request, swarm service. Without `deployments` the rows' artifact
        and deploy time are not read (a read of each row's deployment and artifact): for
        who needs only their health, drift and staleness (the dashboard's overview)."""
        authz.require(who, Action.READ)
        if service:
            validation.name("service", service, "service name")
        if environment:
            validation.environment("environment", environment)
        now = self.ctx.clock()
        async with self.ctx.store.tx() as tx:
            rows = [
                r
                for r in await tx.list_live_services()
                if (not service or r.service == service)
                and (not environment or r.environment == environment)
                and _in_scope(who, r)
            ]
            reported = await tx.live_report_times()
            busy = await tx.active_keys()
            made_by: dict[str, tuple[str, float]] = {}
            for deployment_id in {r.deployment_id for r in rows} if deployments else ():
                d = await tx.get_deployment(deployment_id)
                if d is not None:
                    art = await tx.get_artifact(d.artifact_id) if d.artifact_id else None
                    made_by[deployment_id] = (
                        art.artifact_name if art is not None else "",
                        d.finished_at or d.created_at,
                    )
        connected = {s.cluster for s in self.sessions.all() if not s.closed}
        out = []
        for r in rows:
            reason, since = r.drift_reason, r.drift_since
            if (r.service, r.environment, r.pull_request) not in busy:
                # Judged again now: a grace period may have passed since the last report,
                # or a deployment that ended after it may have made live agree again (the
                # record itself starts or ends with the next report).
                reason = drift_reason(r, now, self.ctx.settings.drift_grace)
                if reason and not r.drift_reason:
                    grace_ended = r.degraded_since + self.ctx.settings.drift_grace
                    since = grace_ended if r.degraded_since else r.reported_at
                elif not reason:
                    since = 0.0
            report_time = max(reported.get(r.cluster, 0.0), r.reported_at)
            name, deployed = made_by.get(r.deployment_id, ("", 0.0))
            out.append(
                ServiceStatus(
                    live=r,
                    artifact_name=name,
                    deploy_time=deployed,
                    drift_reason=reason,
                    drift_since=since,
                    stale=self._stale(r.cluster, report_time, now, connected),
                    report_time=report_time,
                )
            )
        out.sort(
            key=lambda s: (
                s.live.service,
                s.live.environment,
                s.live.pull_request,
                s.live.swarm_service,
            )
        )
        return out

    async def drift_history(
        self, who: Principal, service: str, environment: str, pull_request: int, limit: int
    ) -> list[DriftRecord]:
        """The target's drift records, ongoing and past, newest first (from the audit log,
        where they are written). Readers may ask, for targets in their scope."""
        authz.require(who, Action.READ)
        validation.name("service", service, "service name")
        validation.environment("environment", environment)
        if not _in_scope_of(who, service, environment):
            return []
        limit = max(1, min(limit or DRIFT_RECORDS, DRIFT_RECORDS))
        async with self.ctx.store.tx() as tx:
            entries = await tx.list_audit_actions(service, (DETECTED, HEALED), DRIFT_AUDIT_READ)
        records = [
            r
            for r in drift_records(entries)
            if r.environment == environment and r.pull_request == pull_request
        ]
        return records[:limit]

    def _stale(self, cluster: str, reported: float, now: float, connected: set[str]) -> bool:
        """No agent of the cluster connected here, and (alone on the store, or not heard of
        through the store for a while: it may be connected to another replica)."""
        if cluster in connected:
            return False
        return not self._shared_store() or now - reported > STALE_AFTER

    async def watch(
        self, who: Principal, service: str, environment: str
    ) -> AsyncGenerator[list[ServiceStatus]]:
        """The rows now, then again whenever they change (here at once; through another
        replica within WATCH_RECHECK), until the caller leaves. The stream counts against
        the token's limit and ends (UNAUTHENTICATED) when the token is revoked or expires."""
        last: list[ServiceStatus] | None = None
        with self.streams.opened("watch", who, lambda why: self._wake_watchers()) as stream:
            while True:
                if stream.ended:
                    raise Unauthenticated(stream.ended)
                changed = self._changed
                # Not while a commit holds the store: reading would block the loop.
                await self.ctx.store.writable()
                rows = await self.get(who, service, environment)
                if rows != last:
                    yield rows
                    last = rows
                try:
                    async with asyncio.timeout(WATCH_RECHECK):
                        await changed.wait()
                except TimeoutError:
                    pass

    def _wake_watchers(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _in_scope(who: Principal, row: LiveServiceState) -> bool:
    """A token scoped to services or environments sees only their rows."""
    return _in_scope_of(who, row.service, row.environment)


def _in_scope_of(who: Principal, service: str, environment: str) -> bool:
    if who.services and service not in who.services:
        return False
    return not (who.environments and environment not in who.environments)
