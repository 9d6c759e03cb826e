"""This replica's side of the bus (core/bus.py): after each commit it tells the others what
they must act on, and it acts on what they tell it — their events reach the watchers
subscribed here, their new work wakes the dispatch here, their commands reach the agents
whose streams are here, their revoked tokens end the streams here.

What arrives is news, never data: events are read from the store, in order, and a watcher
that sees a gap re-reads (core/deployments.py), so a notice lost, late or out of order
costs time, never an event. `sweep()` (every second, while other replicas may exist)
finds what a lost notice announced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from sami_control.core.bus import Bus, Notice
from sami_control.core.commands import CancelCommand, CloseCommand, Command, RevokeCommand
from sami_control.core.hub import Hub
from sami_control.core.sessions import Sessions
from sami_control.core.store import Store
from sami_control.core.streams import Streams

log = structlog.get_logger("sami.control")

# A command's reason is cut to this on the bus (the agent logs it; the event has it whole).
MAX_REASON = 500


class Peers:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        hub: Hub,
        sessions: Sessions,
        streams: Streams,
        forget_token: Callable[[str], None],
        wake: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.store = store
        self.hub = hub
        self.sessions = sessions
        self.streams = streams
        self._forget_token = forget_token
        self._wake = wake
        # Deployments whose events are being read for the hub, and those that must be read
        # again once that read ends (a notice came meanwhile).
        self._reading: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.received = 0

    # What this replica tells the others

    def tell(self, notice: Notice) -> None:
        if notice:
            notice.sender = self.bus.replica_id
            self.bus.send(notice)

    @staticmethod
    def command(cluster: str, agent_id: str, cmd: Command) -> tuple[str, str, str, str, str, str]:
        kind = "cancel" if isinstance(cmd, CancelCommand) else "revoke"
        assert isinstance(cmd, CancelCommand | RevokeCommand)
        return (cluster, agent_id, kind, cmd.deployment_id, cmd.lease_id, cmd.reason[:MAX_REASON])

    # What the others tell this replica

    def receive(self, notice: Notice) -> None:
        if notice.sender == self.bus.replica_id:
            return  # its own, echoed back by the database
        self.received += 1
        clusters = self.sessions.open_by_cluster() if notice.work else {}
        if any(c in clusters for c in notice.work):
            self._wake()
        for cluster, agent_id, kind, dep, lease, reason in notice.commands:
            self._deliver(cluster, agent_id, kind, dep, lease, reason)
        for token_id in notice.revoked_tokens:
            self._forget_token(token_id)
            self.streams.end_token(token_id, f"token {token_id} was revoked")
        for cluster, agent_id in notice.connected:
            self._moved(cluster, agent_id)
        for dep, (first, _) in notice.events.items():
            if self.hub.watched(dep):
                self._read(dep, first - 1)

    def resync(self) -> None:
        """Notices may have been missed (the bus reconnected): act as if each had come."""
        log.info("bus_resync", watched=len(self.hub.watched_ids()))
        self._wake()
        for dep in self.hub.watched_ids():
            self._read(dep, 0)

    async def sweep(self) -> None:
        """The safety net under lost notices, for the watchers here: a deployment whose
        stored events go past what this replica's watchers were given is read again."""
        watched = self.hub.watched_ids()
        if not watched:
            return
        async with self.store.tx() as tx:
            found = [await tx.get_deployment(d) for d in watched]
        for d in found:
            if d is not None and d.last_sequence > self.hub.last_sequence(d.id):
                self._read(d.id, 0)

    def _deliver(
        self, cluster: str, agent_id: str, kind: str, dep: str, lease: str, reason: str
    ) -> None:
        session = self.sessions.get(cluster, agent_id)
        if session is None or session.closed:
            return
        if kind == "cancel":
            session.send(CancelCommand(dep, lease, reason))
        else:
            session.leases.discard(dep)
            session.send(RevokeCommand(dep, lease, reason))

    def _moved(self, cluster: str, agent_id: str) -> None:
        """The agent opened a stream on another replica: the one here is a leftover (a cut
        this replica has not noticed yet), and must not be offered work."""
        session = self.sessions.get(cluster, agent_id)
        if session is None or session.closed:
            return
        # A stream opened here in the last moment is the newer one: keep it (the other
        # replica closes its own when it hears of this one).
        if self.clock() - session.connected_at < 0.5:
            return
        session.send(CloseCommand("this agent id connected again on another replica"))
        session.closed = True
        # Its stream ends when it reads the Close; until then it no longer counts against
        # its token's limit (as when an agent reconnects to the same replica).
        if session.stream is not None:
            self.streams.close(session.stream)

    def _read(self, dep: str, after: int) -> None:
        """Read the deployment's events past what its watchers here were given (or past
        `after`, when they were given none through the hub yet: each read the log itself
        when it began) and publish them."""
        if dep in self._reading:
            self._again.add(dep)
            return
        self._reading.add(dep)
        task = asyncio.get_running_loop().create_task(self._read_events(dep, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_events(self, dep: str, after: int) -> None:
        try:
            while True:
                self._again.discard(dep)
                start = self.hub.last_sequence(dep) or after
                events = [e async for e in self.store.iter_events(dep, start)]
                self.hub.publish(events)
                if dep not in self._again:
                    return
        except Exception:  # the sweep reads it again; the watcher's own re-read too
            log.exception("peer_events_read_failed", deployment_id=dep)
        finally:
            self._reading.discard(dep)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
