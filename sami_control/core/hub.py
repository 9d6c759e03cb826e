"""In-process fan-out of stored events to watchers.

Events are published only after the transaction that stored them committed, so a watcher
never sees an event that could still be lost. A watcher that falls behind is not allowed to
grow memory without bound: its queue overflows into a `lagged` flag and it re-reads from the
store, which holds every event anyway.

A publish costs one append and one wake-up per watcher, in the order the watchers
subscribed (watchers that share a connection tend to subscribe together: their writes then
go out together).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from sami_control.core.model import Event

QUEUE_LIMIT = 1024


class Backlog:
    """A watcher's pending events: the part of asyncio.Queue's interface the watcher uses
    (`empty`, `qsize`, `full`, `get_nowait`, `put_nowait`), without its bookkeeping for
    waiting getters and putters and `join()` (the watcher waits on its wake-up event)."""

    __slots__ = ("_items", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Event] = deque()
        self.maxsize = maxsize

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, e: Event) -> None:
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(e)

    def get_nowait(self) -> Event:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()


class Subscription:
    __slots__ = ("deployment_id", "hub", "lagged", "queue", "wakeup")

    def __init__(self, hub: Hub, deployment_id: str) -> None:
        self.hub = hub
        self.deployment_id = deployment_id
        self.queue = Backlog(QUEUE_LIMIT)
        self.lagged = False
        self.wakeup = asyncio.Event()

    def offer(self, e: Event) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(e)
        except asyncio.QueueFull:
            self.lagged = True
        self.wakeup.set()

    def close(self) -> None:
        self.hub._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    def __init__(self) -> None:
        # By deployment: its subscriptions in the order they came (a dict used as an
        # ordered set).
        self._subs: dict[str, dict[Subscription, None]] = {}
        # By watched deployment: the highest sequence published to its watchers (what other
        # replicas' events are read after: core/peers.py).
        self._last: dict[str, int] = {}

    def subscribe(self, deployment_id: str) -> Subscription:
        sub = Subscription(self, deployment_id)
        self._subs.setdefault(deployment_id, {})[sub] = None
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.deployment_id)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del self._subs[sub.deployment_id]
                self._last.pop(sub.deployment_id, None)

    def publish(self, events: Iterable[Event]) -> None:
        for e in events:
            subs = self._subs.get(e.deployment_id)
            if subs:
                if e.sequence > self._last.get(e.deployment_id, 0):
                    self._last[e.deployment_id] = e.sequence
                for sub in subs:
                    sub.offer(e)

    def watched(self, deployment_id: str) -> bool:
        return deployment_id in self._subs

    def watched_ids(self) -> list[str]:
        return list(self._subs)

    def last_sequence(self, deployment_id: str) -> int:
        """The highest sequence published here to the deployment's watchers (0: none yet)."""
        return self._last.get(deployment_id, 0)

    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subs.values())
