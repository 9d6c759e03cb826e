"""Every call the dashboard makes into the core, and nothing else: thin async functions the
handlers await, each with the signed-in Principal, through the same gate as an RPC
(`ControlPlane.durable_call`: the store can take a read without blocking the loop, and the
answer waits for what it wrote to be durable). The core's own authorization decides what
each caller may see and do; nothing here checks a role itself.

Kept in one module: the dashboard's whole dependence on the core is here. Where the API
has no single call for what a page shows (the overview, the events of a deployment so far),
it is composed here from the core calls the API uses."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from sami_control.core import authz
from sami_control.core.controlplane import ControlPlane
from sami_control.core.errors import NotFound, PermissionDenied
from sami_control.core.live_status import DriftRecord, ServiceStatus
from sami_control.core.model import (
    AgentRecord,
    Artifact,
    AuditEntry,
    Cluster,
    Deployment,
    DeploymentAction,
    Event,
    Principal,
    State,
)
from sami_control.core.requests import DeploymentInput
from sami_manifests import ENVIRONMENTS

# The environment columns of the overview; previews are listed under their service.
COLUMNS = tuple(e for e in ENVIRONMENTS if e != "pull_request")
OVERVIEW_PAGE = 50
# Drift records a history page shows (the newest; `sami audit` has every one).
DRIFT_SHOWN = 10
# Previews listed per service on the overview (their newest deployments).
PREVIEWS_READ = 50


@dataclass
class Cell:
    """One service in one environment: its newest deployment, and what runs there (the
    newest SUCCEEDED deploy, which a later failure or rollback left in place)."""

    latest: Deployment | None = None
    running: Deployment | None = None
    artifact: Artifact | None = None
    # What its agent last reported of the target's swarm services (docs/status.md).
    live: list[ServiceStatus] = field(default_factory=list)

    @property
    def drift(self) -> str:
        """The first drift reason among its services ("" when live agrees with Sami)."""
        return next((s.drift_reason for s in self.live if s.drift_reason), "")

    @property
    def stale(self) -> bool:
        return any(s.stale for s in self.live)


@dataclass
class Preview:
    pull_request: int
    latest: Deployment
    artifact: Artifact | None


@dataclass
class ServiceRow:
    service: str
    cells: dict[str, Cell]
    previews: list[Preview] = field(default_factory=list)


@dataclass
class Overview:
    rows: list[ServiceRow]
    # The last service of this page, for the next page's `after` ("" on the last page).
    next_after: str
    synced: bool


@dataclass
class History:
    deployments: list[Deployment]
    artifacts: dict[str, Artifact]
    # What runs now: the newest SUCCEEDED deploy (per pull request, for previews).
    live_ids: set[str]
    next_page: str
    # The target's drift records, newest first (none for previews: one per pull request).
    drift: list[DriftRecord] = field(default_factory=list)


class Data:
    def __init__(self, core: ControlPlane) -> None:
        self.core = core

    async def authenticate(self, token: str) -> Principal:
        """The token's Principal (cached by the core), or Unauthenticated."""
        async with self.core.durable_call():
            return await self.core.tokens.authenticate(token)

    async def overview(self, who: Principal, after: str) -> Overview:
        async with self.core.durable_call():
            try:
                revision, _ = await self.core.manifests.get(who, "current")
            except NotFound:
                return Overview([], "", synced=False)
            targets: dict[str, set[str]] = {}
            for entry in revision.entries:
                targets.setdefault(str(entry["service"]), set()).add(str(entry["environment"]))
            services = sorted(s for s in targets if s > after)
            page = services[:OVERVIEW_PAGE]
            rows = [await self._service_row(who, s, targets[s]) for s in page]
            live = await self.core.live.get(who, "", "", deployments=False)
        by_service = {row.service: row for row in rows}
        for status in live:
            row = by_service.get(status.live.service)
            cell = row.cells.get(status.live.environment) if row else None
            if cell is not None and not status.live.pull_request:
                cell.live.append(status)
        more = len(services) > OVERVIEW_PAGE
        return Overview(rows, page[-1] if more else "", synced=True)

    async def _service_row(self, who: Principal, service: str, envs: set[str]) -> ServiceRow:
        cells: dict[str, Cell] = {}
        for env in COLUMNS:
            if env not in envs:
                continue
            latest = await self._newest(who, service, env, None)
            running = latest
            if latest is not None and latest.state is not State.SUCCEEDED:
                running = await self._newest(who, service, env, State.SUCCEEDED)
            cells[env] = Cell(latest, running, await self._artifact(who, running))
        row = ServiceRow(service, cells)
        if "pull_request" in envs:
            row.previews = await self._previews(who, service)
        return row

    async def _newest(
        self, who: Principal, service: str, env: str, state: State | None
    ) -> Deployment | None:
        page, _ = await self.core.deployments.list(who, service, env, state, 1, "")
        return page[0] if page else None

    async def _previews(self, who: Principal, service: str) -> list[Preview]:
        """The newest deployment of each pull request among the service's recent preview
        deployments, but for previews torn down."""
        page, _ = await self.core.deployments.list(
            who, service, "pull_request", None, PREVIEWS_READ, ""
        )
        seen: set[int] = set()
        out: list[Preview] = []
        for d in page:
            if d.pull_request in seen:
                continue
            seen.add(d.pull_request)
            if d.action is DeploymentAction.TEARDOWN and d.state is State.SUCCEEDED:
                continue
            out.append(Preview(d.pull_request, d, await self._artifact(who, d)))
        return sorted(out, key=lambda p: p.pull_request)

    async def _artifact(self, who: Principal, d: Deployment | None) -> Artifact | None:
        if d is None or not d.artifact_id:
            return None
        try:
            return await self.core.artifacts.get(who, d.artifact_id)
        except NotFound:
            return None

    async def deployment(self, who: Principal, ident: str) -> tuple[Deployment, Artifact | None]:
        async with self.core.durable_call():
            d = await self.core.deployments.get(who, ident)
            return d, await self._artifact(who, d)

    async def events(
        self, who: Principal, ident: str, after: int, limit: int
    ) -> tuple[Deployment, list[Event]]:
        """The deployment, and up to `limit` of its events after `after`, as stored now:
        what the watch replays before it follows live (the API has no other way to read
        events), stopped at the last event the deployment had when it was read."""
        events: list[Event] = []
        d: Deployment | None = None
        watch = self.watch(who, ident, after)
        try:
            async for item in watch:
                if isinstance(item, Deployment):
                    d = item
                    if d.last_sequence <= after:
                        break
                    continue
                events.append(item)
                assert d is not None
                if item.sequence >= d.last_sequence or len(events) >= limit:
                    break
        finally:
            await watch.aclose()
        assert d is not None
        return d, events

    async def watch(
        self, who: Principal, ident: str, after: int
    ) -> AsyncGenerator[Deployment | Event, None]:
        """The watch `sami watch` follows (core.deployments.watch): the deployment, then its
        events after `after`, live, ending after the terminal one."""
        async with self.core.durable_call():
            async for item in self.core.deployments.watch(who, ident, after):
                yield item

    async def history(
        self, who: Principal, service: str, env: str, page_size: int, page_token: str
    ) -> History:
        async with self.core.durable_call():
            rows, nxt = await self.core.deployments.list(
                who, service, env, None, page_size, page_token
            )
            if env == "pull_request":
                # Each pull request has its own preview: what runs of those on this page.
                succeeded = [d for d in rows if d.state is State.SUCCEEDED]
            else:
                newest = await self._newest(who, service, env, State.SUCCEEDED)
                succeeded = [newest] if newest is not None else []
            artifacts: dict[str, Artifact] = {}
            for d in rows:
                art = await self._artifact(who, d)
                if art is not None:
                    artifacts[d.artifact_id] = art
            drift = []
            if env != "pull_request" and not page_token:
                drift = await self.core.live.drift_history(who, service, env, 0, DRIFT_SHOWN)
        return History(rows, artifacts, _live_ids(succeeded), nxt, drift)

    async def status(self, who: Principal, service: str, env: str) -> list[ServiceStatus]:
        """The live rows `sami status` shows, filtered to the caller's scope by the core."""
        async with self.core.durable_call():
            return await self.core.live.get(who, service, env)

    async def watch_status(
        self, who: Principal, service: str, env: str
    ) -> AsyncGenerator[list[ServiceStatus], None]:
        """The rows now, then again on each change (`sami status` follows the same watch)."""
        async with self.core.durable_call():
            async for rows in self.core.live.watch(who, service, env):
                yield rows

    async def cancel(self, who: Principal, ident: str, reason: str) -> Deployment:
        async with self.core.durable_call():
            return await self.core.deployments.cancel(who, ident, reason)

    async def rollback(
        self, who: Principal, target_id: str, reason: str, request_id: str
    ) -> Deployment:
        """Deploy the artifact of `target_id` (a SUCCEEDED deploy) again, as `sami rollback
        --to` does: the core checks the target and the caller's scope."""
        async with self.core.durable_call():
            target = await self.core.deployments.get(who, target_id)
            text = f"rollback to {target.id}" + (f": {reason}" if reason else "")
            return await self.core.deployments.create(
                who,
                DeploymentInput(
                    service=target.service,
                    environment=target.environment,
                    artifact=target.artifact_id,
                    pull_request=target.pull_request,
                    reason=text,
                    request_id=request_id,
                    deployment_type=target.deployment_type,
                    rollback_of=target.id,
                ),
            )

    async def agents(
        self, who: Principal, page_size: int, page_token: str
    ) -> tuple[list[Cluster], list[AgentRecord], str]:
        async with self.core.durable_call():
            clusters = await self.core.clusters.list(who)
            agents, nxt = await self.core.agents.list(who, "", page_size, page_token)
        return clusters, agents, nxt

    async def audit(
        self, who: Principal, since: float, service: str, page_size: int, page_token: str
    ) -> tuple[list[AuditEntry], str]:
        async with self.core.durable_call():
            return await self.core.audit.list(who, since, service, page_size, page_token)


def _live_ids(succeeded: list[Deployment]) -> set[str]:
    """Of SUCCEEDED deployments newest first, the newest of each pull request (0: none),
    when it is a deploy: after a SUCCEEDED teardown nothing of that preview runs."""
    decided: set[int] = set()
    live: set[str] = set()
    for d in succeeded:
        if d.pull_request in decided:
            continue
        decided.add(d.pull_request)
        if d.action is DeploymentAction.DEPLOY:
            live.add(d.id)
    return live


def may_deploy(who: Principal, service: str, environment: str) -> bool:
    """Whether the core would let `who` create or cancel a deployment of this target (the
    buttons shown; the core checks again when one is pressed)."""
    try:
        authz.require_deploy_scope(who, service, environment)
    except PermissionDenied:
        return False
    return True


def may_read_audit(who: Principal) -> bool:
    try:
        authz.require(who, authz.Action.READ_AUDIT)
    except PermissionDenied:
        return False
    return True


def may_read(who: Principal) -> bool:
    """Readers and above: who may sign in to the dashboard (an agent token may not)."""
    try:
        authz.require(who, authz.Action.READ)
    except PermissionDenied:
        return False
    return True
