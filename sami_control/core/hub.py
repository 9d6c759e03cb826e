"""In-process fan-out of stored events to watchers.

Events are published only after the transaction that stored them committed, so a watcher
never sees an event that could still be lost. A watcher that falls behind is not allowed to
grow memory without bound: its queue overflows into a `lagged` flag and it re-reads from the
store, which holds every event anyway.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from sami_control.core.model import Event

QUEUE_LIMIT = 1024


class Subscription:
    def __init__(self, hub: Hub, deployment_id: str) -> None:
        self.hub = hub
        self.deployment_id = deployment_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
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
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, deployment_id: str) -> Subscription:
        sub = Subscription(self, deployment_id)
        self._subs[deployment_id].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.deployment_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.deployment_id]

    def publish(self, events: Iterable[Event]) -> None:
        for e in events:
            for sub in self._subs.get(e.deployment_id, ()):
                sub.offer(e)

    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subs.values())
