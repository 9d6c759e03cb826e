"""What a transaction makes others see, and when: only once it is durable.

A service collects the events it stored and the commands for agents into an `Effects`, and
hands it to `Publisher.apply()`, which publishes it after the commit (with group commits, at
the end of this turn of the event loop; if that commit fails, never): watchers, agents, the
canonical `deployment_state` log line, the observers (metrics), and the dispatch loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from sami_control.core.bus import Notice
from sami_control.core.commands import Command
from sami_control.core.hub import Hub
from sami_control.core.model import Deployment, Event, EventType, State
from sami_control.core.peers import Peers
from sami_control.core.sessions import AgentSession
from sami_control.core.store import Store, Tx

log = structlog.get_logger("sami.control")
# The deployment_state lines logged at warning: the rollout failed.
_WARN_STATES = frozenset({State.FAILED, State.ROLLED_BACK})

# Called with the events of each committed transaction and their deployments (metrics).
Observer = Callable[[list[Event], dict[str, Deployment]], None]


@dataclass
class Effects:
    events: list[Event] = field(default_factory=list)
    commands: list[tuple[AgentSession, Command]] = field(default_factory=list)
    # Wake the dispatch loop: there may be work to offer.
    wake: bool = False
    # The deployments the events are about, by id: their service, environment and cluster
    # go on the log line of each state change and label the metrics.
    deployments: dict[str, Deployment] = field(default_factory=dict)

    def add(self, d: Deployment, *events: Event) -> None:
        self.events.extend(events)
        self.deployments[d.id] = d

    # Commands for agents whose stream may be on another replica: (cluster, agent id,
    # command), delivered by the replica that holds it (core/peers.py).
    elsewhere: list[tuple[str, str, Command]] = field(default_factory=list)

    def send(self, session: AgentSession, cmd: Command) -> None:
        self.commands.append((session, cmd))

    def tell_agent(self, cluster: str, agent_id: str, cmd: Command) -> None:
        """A command for an agent that may be connected to another replica."""
        self.elsewhere.append((cluster, agent_id, cmd))

    def notice(self) -> Notice:
        """What the other replicas must hear of this (core/bus.py)."""
        n = Notice()
        for e in self.events:
            span = n.events.get(e.deployment_id)
            n.events[e.deployment_id] = (
                (min(span[0], e.sequence), max(span[1], e.sequence)) if span else (e.sequence,) * 2
            )
        if self.wake:
            n.work = {d.cluster for d in self.deployments.values() if d.cluster}
        n.commands = [Peers.command(c, a, cmd) for c, a, cmd in self.elsewhere]
        return n


class Outbox(Protocol):
    """Notifications to send about a state change, written in its transaction
    (core/notifications.py)."""

    async def enqueue(self, tx: Tx, d: Deployment, ev: Event) -> int: ...


class _NoOutbox:
    async def enqueue(self, tx: Tx, d: Deployment, ev: Event) -> int:
        return 0


class Publisher:
    def __init__(self, store: Store, hub: Hub, wake: Callable[[], None]) -> None:
        self._store = store
        # store_event hands every stored state change to the outbox in the same
        # transaction (set by core/controlplane.py; nothing to notify by default).
        self.outbox: Outbox = _NoOutbox()
        self.hub = hub
        self._wake = wake
        self.observers: list[Observer] = []
        # Set once the replicas' bus is up (core/controlplane.py).
        self.peers: Peers | None = None

    async def store_event(self, tx: Tx, d: Deployment, ev: Event) -> None:
        """Append `ev` in `tx`; a state change writes its notifications in the same
        transaction (the outbox), so none is ever stored without them."""
        await tx.append_event(ev)
        await self.outbox.enqueue(tx, d, ev)

    def apply(self, fx: Effects) -> None:
        """Publish what a transaction produced, once it is durable."""
        self._store.after_commit(functools.partial(self._publish, fx))

    def send(self, session: AgentSession, cmd: Command) -> None:
        """Send one command once what was written so far is durable."""
        self._store.after_commit(functools.partial(session.send, cmd))

    def _publish(self, fx: Effects) -> None:
        self.hub.publish(fx.events)
        for session, cmd in fx.commands:
            session.send(cmd)
        for e in fx.events:
            if e.type is EventType.STATE_CHANGED:
                # The one canonical line per state change (docs/observability.md).
                d = fx.deployments.get(e.deployment_id)
                # An outcome someone must look at is a warning: alerting on level finds it.
                emit = log.warning if e.state in _WARN_STATES else log.info
                emit(
                    "deployment_state",
                    deployment_id=e.deployment_id,
                    service=d.service if d else None,
                    environment=d.environment if d else None,
                    cluster=d.cluster if d else None,
                    pull_request=(d.pull_request or None) if d else None,
                    state=e.state.name,
                    attempt=e.attempt,
                    agent_id=e.agent_id or None,
                    message=e.message or None,
                )
        for observe in self.observers:
            try:
                observe(fx.events, fx.deployments)
            except Exception:  # an observer (metrics) must never break the core
                log.exception("observer_failed")
        if fx.wake:
            self._wake()
        if self.peers is not None:
            self.peers.tell(fx.notice())

    def tell(self, notice: Notice) -> None:
        """Tell the other replicas, once what was written so far is durable."""
        if self.peers is not None:
            self._store.after_commit(functools.partial(self.peers.tell, notice))
