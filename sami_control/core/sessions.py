"""Connected agents, as the core sees them: a session per open stream with an outbox of
commands (core/commands.py), and the registry of the sessions this process serves.

A control plane holds thousands of idle sessions: they are slotted, and a session's outbox
holds no more than a list until it has commands.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, MutableSet
from dataclasses import dataclass, field

from sami_control.core.commands import Command
from sami_control.core.streams import Stream


class Outbox:
    """The commands for one agent, in order, until the API layer writes them: `put_nowait`
    appends and calls the consumer's `on_put` (which starts a writer when none runs);
    the consumer takes them with `get_nowait`."""

    __slots__ = ("_items", "on_put")

    def __init__(self) -> None:
        self._items: deque[Command] = deque()
        self.on_put: Callable[[], None] | None = None

    def put_nowait(self, cmd: Command) -> None:
        self._items.append(cmd)
        if self.on_put is not None:
            self.on_put()

    def get_nowait(self) -> Command:
        """The oldest command (IndexError if there is none)."""
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class LeaseIds(MutableSet[str]):
    """The deployment ids a session holds leases on: a set, allocated only while it holds
    some (most agents hold none most of the time)."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: set[str] | None = None

    def add(self, value: str) -> None:
        if self._ids is None:
            self._ids = set()
        self._ids.add(value)

    def discard(self, value: str) -> None:
        if self._ids is not None:
            self._ids.discard(value)
            if not self._ids:
                self._ids = None

    def __contains__(self, value: object) -> bool:
        return self._ids is not None and value in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids or ())

    def __len__(self) -> int:
        return len(self._ids) if self._ids is not None else 0

    def __repr__(self) -> str:
        return f"LeaseIds({sorted(self)!r})"


@dataclass(slots=True, eq=False)
class AgentSession:
    agent_id: str
    cluster: str
    version: str
    capabilities: frozenset[str]
    token_id: str
    connected_at: float
    last_seen_at: float
    outbox: Outbox = field(default_factory=Outbox)
    # Deployment ids this session holds a lease on.
    leases: LeaseIds = field(default_factory=LeaseIds)
    closed: bool = False
    # This session among the token's open streams: ended when the token is revoked or
    # expires. Its principal carries the peer the stream came from, for the audit log.
    stream: Stream | None = None
    # The progress rate limit (a token bucket): reports it may still send now, as of when.
    progress_allowance: float = -1.0  # -1: full (set on the first report)
    progress_checked_at: float = 0.0
    # Progress reports dropped since the last one taken (logged once per run of drops).
    progress_dropped: int = 0

    def take_progress(self, now: float, rate: float, burst: float) -> bool:
        """Whether a progress report may be taken now (`rate` per second, `burst` at once);
        False: it is over the limit, and dropped."""
        if rate <= 0:
            return True
        if self.progress_allowance < 0:
            self.progress_allowance = burst
        else:
            elapsed = max(0.0, now - self.progress_checked_at)
            self.progress_allowance = min(burst, self.progress_allowance + elapsed * rate)
        self.progress_checked_at = now
        if self.progress_allowance < 1:
            return False
        self.progress_allowance -= 1
        return True

    def send(self, cmd: Command) -> None:
        if not self.closed:
            self.outbox.put_nowait(cmd)


class Sessions:
    """The open agent sessions of this process, by (cluster, agent id): an agent id names
    an agent within its cluster only, so another cluster's token can never reach (replace,
    or receive the commands of) this cluster's session of the same id."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        # agent id -> cluster -> session: finding the clusters an id is live in is a lookup.
        self._by_id: dict[str, dict[str, AgentSession]] = {}

    def get(self, cluster: str, agent_id: str) -> AgentSession | None:
        return self._by_id.get(agent_id, {}).get(cluster)

    def live_elsewhere(self, cluster: str, agent_id: str) -> AgentSession | None:
        """An open session of `agent_id` in another cluster than `cluster`, if any."""
        for c, s in self._by_id.get(agent_id, {}).items():
            if c != cluster and not s.closed:
                return s
        return None

    def put(self, session: AgentSession) -> None:
        self._by_id.setdefault(session.agent_id, {})[session.cluster] = session

    def remove(self, session: AgentSession) -> bool:
        """Forget `session` if it is still the one registered for its cluster and id."""
        mine = self._by_id.get(session.agent_id)
        if mine is None or mine.get(session.cluster) is not session:
            return False
        del mine[session.cluster]
        if not mine:
            del self._by_id[session.agent_id]
        return True

    def all(self) -> list[AgentSession]:
        return [s for mine in self._by_id.values() for s in mine.values()]

    def open_by_cluster(self) -> dict[str, list[AgentSession]]:
        out: dict[str, list[AgentSession]] = {}
        for mine in self._by_id.values():
            for s in mine.values():
                if not s.closed:
                    out.setdefault(s.cluster, []).append(s)
        return out

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_id.values())

    def __bool__(self) -> bool:
        return bool(self._by_id)
