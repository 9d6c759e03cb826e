"""The bus between control-plane replicas that share one database.

Each replica keeps in memory what only it can act on: the agents' streams connected to it,
the watchers subscribed to it, its dispatch loop. What one replica commits, the others must
hear of at once: new events (their watchers), new work (their agents), a lease revoked or a
deployment cancelled whose agent is connected elsewhere, a revoked token, an agent that
moved. A `Notice` says which, and the bus carries it (PostgreSQL: LISTEN/NOTIFY; one
replica on SQLite: nowhere).

A notice is sent after the commit it speaks of, never inside the transaction: so a notice
never announces what could still be rolled back, and PostgreSQL's NOTIFY (which serialises
the commits of notifying transactions) stays off the write path. It may be lost — the
sender killed between its commit and the send, the listener's connection cut — so the data
never travels on the bus, only the news that there is some: every receiver reads the store,
and each thing a notice announces is also found by a bounded periodic sweep (dispatch, the
watchers' last sequences, the token recheck), which is the safety net, not the path.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# One NOTIFY payload is at most 8000 bytes; a notice larger than this is split.
MAX_PAYLOAD = 7000


@dataclass
class Notice:
    """What a replica committed, as the others need to hear it."""

    sender: str = ""
    # Deployment id -> (first, last) sequence of the events stored.
    events: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Clusters with new work to offer (or a lease that ended): wake their dispatch.
    work: set[str] = field(default_factory=set)
    # Commands for an agent whose stream is on another replica: (cluster, agent id, kind,
    # deployment id, lease id, reason), kind "cancel" or "revoke".
    commands: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    # Tokens revoked: every replica ends their streams and forgets them.
    revoked_tokens: set[str] = field(default_factory=set)
    # Agents that connected here: a replica still holding a stream of theirs closes it.
    connected: set[tuple[str, str]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.events or self.work or self.commands or self.revoked_tokens or self.connected
        )

    def merge(self, other: Notice) -> None:
        for dep, (first, last) in other.events.items():
            mine = self.events.get(dep)
            self.events[dep] = (min(first, mine[0]), max(last, mine[1])) if mine else (first, last)
        self.work |= other.work
        self.commands.extend(other.commands)
        self.revoked_tokens |= other.revoked_tokens
        self.connected |= other.connected

    def encode(self) -> list[str]:
        """JSON payloads of at most MAX_PAYLOAD bytes each (split by item if needed)."""
        items: list[tuple[str, Any]] = [("e", [k, a, b]) for k, (a, b) in self.events.items()]
        items += [("w", c) for c in sorted(self.work)]
        items += [("c", list(c)) for c in self.commands]
        items += [("t", t) for t in sorted(self.revoked_tokens)]
        items += [("a", list(a)) for a in sorted(self.connected)]
        payloads: list[str] = []
        chunk: dict[str, Any] = {"s": self.sender}
        size = len(json.dumps(chunk))
        for key, value in items:
            cost = len(json.dumps(value)) + 1
            if size + cost > MAX_PAYLOAD and len(chunk) > 1:
                payloads.append(json.dumps(chunk, separators=(",", ":")))
                chunk, size = {"s": self.sender}, len(json.dumps({"s": self.sender}))
            chunk.setdefault(key, []).append(value)
            size += cost + 6
        if len(chunk) > 1:
            payloads.append(json.dumps(chunk, separators=(",", ":")))
        return payloads

    @classmethod
    def decode(cls, payload: str) -> Notice:
        """A payload sent by encode(); anything malformed is dropped item by item (a notice
        is news, not data: the sweeps find what a lost one announced)."""
        raw = json.loads(payload)
        n = cls(sender=str(raw.get("s", "")))
        for dep, first, last in raw.get("e", ()):
            n.events[str(dep)] = (int(first), int(last))
        n.work = {str(c) for c in raw.get("w", ())}
        n.commands = [
            (str(a), str(b), str(c), str(d), str(e), str(f))
            for a, b, c, d, e, f in raw.get("c", ())
        ]
        n.revoked_tokens = {str(t) for t in raw.get("t", ())}
        n.connected = {(str(a), str(b)) for a, b in raw.get("a", ())}
        return n


Receiver = Callable[[Notice], None]


class Bus(abc.ABC):
    """Carries notices between the replicas of one database. `send` is called after the
    commit; `start` delivers every notice another replica sent to `receive`, and calls
    `resync` whenever notices may have been missed (the listening connection was lost and
    is back): the receiver then sweeps everything at once."""

    replica_id = ""

    @property
    def shared(self) -> bool:
        """Whether other replicas may exist (and the sweeps that back the bus are needed)."""
        return False

    @abc.abstractmethod
    def send(self, notice: Notice) -> None: ...

    @abc.abstractmethod
    async def start(self, receive: Receiver, resync: Callable[[], None]) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...


class LocalBus(Bus):
    """One replica (SQLite): there is nobody to tell."""

    replica_id = "local"

    def send(self, notice: Notice) -> None:
        return None

    async def start(self, receive: Receiver, resync: Callable[[], None]) -> None:
        return None

    async def stop(self) -> None:
        return None
