"""The control plane's core, assembled: one service per resource over the same few
collaborators (core/context.py), the background loop that expires leases and dispatches
work, and the one gate every call from outside goes through (`durable_call`).

Each resource has its own module and class; callers reach them as attributes, e.g.
`core.deployments.create(who, request)`:

| attribute | module | what |
|---|---|---|
| `tokens` | core/tokens.py | create, list, revoke; authenticate every call |
| `audit` | core/audit.py | the audit log; `@audited` records refusals |
| `clusters` | core/clusters.py | clusters and the environments they serve |
| `artifacts` | core/artifacts.py | the artifact catalog |
| `manifests` | core/manifest_catalog.py | synced manifest revisions; resolving a service |
| `deployments` | core/deployments.py | create, cancel, tear down previews, list, watch |
| `approvals` | core/approvals.py | approve, reject, expire deployments awaiting approval |
| `leases` | core/dispatch.py | leases, their expiry, dispatching queued work |
| `agents` | core/agents.py | agent sessions: connect, disconnect, list |
| `reports` | core/agent_reports.py | what agents report on their stream |
| `cron_runs` | core/cron_runs.py | the runs of cron jobs |
| `locks` | core/target_locks.py | target locks (`sami lock`): take, release, break, list |
| `secrets` | core/secrets.py | secrets (ciphertext only): set, list, remove, export |
| `variables` | core/variables.py | variables of a service/environment |
| `recipients` | core/recipients.py | the clusters' age recipients (the agents' public keys) |
| `live` | core/live_status.py | what runs (agents' live status), drift; `sami status` |
| `info` | core/server_info.py | what this control plane is (version, store) |
| `notifications` | core/notifications.py | notification targets, the outbox and its sender |
| `queries` | core/queries.py | logs and plans asked of a connected agent (`relay`: the channel) |

Nothing here imports grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import structlog

from sami_control.core.agent_reports import AgentReports
from sami_control.core.agents import Agents
from sami_control.core.approvals import Approvals
from sami_control.core.artifacts import Artifacts
from sami_control.core.audit import Audit
from sami_control.core.clusters import Clusters
from sami_control.core.context import Context
from sami_control.core.cron_runs import CronRuns
from sami_control.core.deployments import Deployments
from sami_control.core.dispatch import Leases
from sami_control.core.effects import Publisher
from sami_control.core.hub import Hub
from sami_control.core.live_status import LiveStatus
from sami_control.core.manifest_catalog import ManifestCatalog
from sami_control.core.notifications import Notifications, RetryPolicy, Sender, Transport
from sami_control.core.peers import Peers
from sami_control.core.queries import PlanBuilder, Queries, Relay
from sami_control.core.recipients import Recipients
from sami_control.core.secrets import Secrets
from sami_control.core.server_info import ServerInfo
from sami_control.core.sessions import Sessions
from sami_control.core.settings import Settings
from sami_control.core.store import StorageFailed, Store
from sami_control.core.streams import Streams
from sami_control.core.target_locks import TargetLocks
from sami_control.core.tokens import Tokens
from sami_control.core.variables import Variables

log = structlog.get_logger("sami.control")

# How often pending approvals are checked for expiry (they live minutes to days).
APPROVAL_CHECK_INTERVAL = 1.0


class ControlPlane:
    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.hub = Hub()
        self.sessions = Sessions()
        self.streams = Streams(lambda: self.settings.max_streams_per_token)
        self.publisher = Publisher(store, self.hub, self._wake_up)
        self.audit = Audit(store, clock)
        ctx = Context(store, clock, self.settings, self.publisher, self.audit)
        self.tokens = Tokens(ctx, self.streams)
        self.clusters = Clusters(ctx)
        self.artifacts = Artifacts(ctx)
        self.manifests = ManifestCatalog(ctx)
        self.leases = Leases(ctx, self.sessions, self.artifacts, self.manifests)
        self.agents = Agents(ctx, self.sessions, self.streams, self.leases)
        self.deployments = Deployments(
            ctx, self.artifacts, self.manifests, self.sessions, self.hub, self.streams
        )
        self.approvals = Approvals(ctx, self.deployments)
        self.cron_runs = CronRuns(ctx)
        self.locks = TargetLocks(ctx)
        self.secrets = Secrets(ctx)
        self.variables = Variables(ctx)
        self.recipients = Recipients(ctx)
        self.reports = AgentReports(ctx, self.agents, self.leases, self.deployments, self.cron_runs)
        self.info = ServerInfo(ctx)
        self.notifications = Notifications(ctx)
        self.publisher.outbox = self.notifications.outbox
        self.live = LiveStatus(
            ctx,
            self.agents,
            self.sessions,
            lambda: self.bus.shared,
            self.deployments,
            self.manifests,
            self.streams,
        )
        self.reports.on_result = self.live.deployment_ended
        self.relay = Relay(self.sessions, self.settings, clock, self._replica_name)
        self.queries = Queries(ctx, self.relay, PlanBuilder(ctx, self.artifacts, self.manifests))
        # Other replicas on the same database (PostgreSQL): what each commits, the others
        # hear of (core/bus.py, core/peers.py). One replica (SQLite): nobody to tell.
        self.bus = store.make_bus()
        self.peers = Peers(
            self.bus,
            store,
            self.hub,
            self.sessions,
            self.streams,
            self.tokens.forget,
            self._wake_up,
            clock,
        )
        if self.bus.shared:
            self.publisher.peers = self.peers
        self._last_sweep = 0.0
        self._last_approval_check = 0.0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        store.on_failure(self._lost_commit)

    def send_notifications(self, transport: Transport) -> Sender:
        """Deliver the outbox through `transport` once started (the server passes its
        HTTP transport; without one, deliveries wait in the outbox)."""
        settings = self.settings
        policy = RetryPolicy(
            settings.notify_max_attempts, settings.notify_backoff, settings.notify_backoff_cap
        )
        sender = Sender(
            self.notifications.ctx,
            self.notifications.outbox,
            transport,
            policy,
            claim_seconds=settings.notify_timeout * 3 + 5,
            retention=settings.notify_retention,
        )
        self.notifications.sender = sender
        return sender

    def _replica_name(self) -> str:
        """This replica's name on the bus, when other replicas may exist (else empty)."""
        return self.bus.replica_id if self.bus.shared else ""

    async def start(self) -> None:
        if self.bus.shared:
            await self.bus.start(self.peers.receive, self.peers.resync)
            log.info("replica_listening", replica=self.bus.replica_id)
        await self.leases.give_grace_after_restart()
        self._loop_task = asyncio.create_task(self._background(), name="sami-dispatch")
        self._wake.set()
        if self.notifications.sender is not None:
            self.notifications.sender.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.notifications.sender is not None:
            await self.notifications.sender.stop()
        self.agents.close_all("the control plane is stopping; reconnect")
        if self._loop_task:
            # The loop also ends on its own once it sees _stopping: on Python 3.11,
            # asyncio.wait_for could swallow a cancellation that raced with the wake event.
            self._wake.set()
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.bus.stop()
        await self.peers.stop()

    @contextlib.asynccontextmanager
    async def durable_call(self) -> AsyncIterator[None]:
        """The gate of every call from outside (RPCs, webhook requests): the block starts
        once the store can take a transaction without blocking the loop (no commit in
        flight), and the call is answered only once what it wrote is durable — a refused
        call too (its audit entry). Raises StorageFailed when that commit failed: nothing
        of the call was kept, and retrying it (with the same request_id) is safe."""
        await self.store.writable()
        try:
            yield
        except Exception:
            with contextlib.suppress(StorageFailed):
                await self.store.durable()
            raise
        await self.store.durable()

    async def writable(self) -> None:
        """Wait while the store cannot take a transaction without blocking the loop (a
        commit in flight): for the agent stream, before each report it reads."""
        await self.store.writable()

    def _wake_up(self) -> None:
        self._wake.set()

    async def _background(self) -> None:
        clock = self.leases.ctx.clock
        deadline = clock()
        while not self._stopping:
            timeout = deadline - clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(timeout, 1.0))):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.store.writable()
                await self.tokens.end_streams_of_invalid_tokens()
                # Most wake-ups are new work, not a lease running out: scan the live
                # leases only once the earliest of them is due (or a second passed).
                if clock() >= self.leases.deadline:
                    self.publisher.apply(await self.leases.expire())
                if clock() - self._last_approval_check >= APPROVAL_CHECK_INTERVAL:
                    # Every replica checks; each expiry is taken under the deployment's lock.
                    self._last_approval_check = clock()
                    self.publisher.apply(await self.approvals.expire())
                if not self._stopping:  # stop() may have run while we waited for the store
                    self.publisher.apply(await self.leases.dispatch())
                if (
                    self.bus.shared
                    and clock() - self._last_sweep >= self.settings.peer_sweep_interval
                ):
                    # The safety net under lost notices (core/peers.py); dispatch runs
                    # at least once a second anyway.
                    self._last_sweep = clock()
                    await self.peers.sweep()
                deadline = self.leases.deadline
            except Exception:  # the loop must survive a bad row or a busy database
                log.exception("dispatch_failed")
                deadline = clock() + 0.5
                await asyncio.sleep(0.5)

    def _lost_commit(self, exc: Exception) -> None:
        """A commit failed after its agents' reports had been taken (group commits): those
        agents got no error and no Done, and would wait. Every agent reconnects instead,
        and sends again what was not confirmed (docs/agent-protocol.md)."""
        log.error("commit_lost_agents_reconnect", error=str(exc), agents=len(self.sessions))
        self.agents.close_all("the control plane could not store a change; reconnect")
