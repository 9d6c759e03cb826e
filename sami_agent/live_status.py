"""The agent's live status reports (docs/status.md): a full report after each Welcome and
every `full_interval` seconds, and in between the services Docker's event stream says
changed, read again after a short debounce and sent only if what they run changed.

The event stream is read by a daemon thread (the Docker SDK blocks); it hands service ids
to the event loop, which does the reading (in a worker thread) and the sending.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog

from sami_agent.executor import LiveService, LiveStatusSource
from sami_agent.jobs import run_in_daemon_thread
from sami_agent.pb import agent_pb2

# Several events come with one change (a service update: the service, then each task's
# container): they are read as one after this quiet time.
DEBOUNCE = 0.2
# The safety net under lost events: a full report this often.
DEFAULT_FULL_INTERVAL = 60.0
# A broken event stream (engine restarted) is opened again after this long.
REWATCH_DELAY = 2.0


def live_service_message(s: LiveService, removed: bool = False) -> agent_pb2.LiveService:
    msg = agent_pb2.LiveService(
        stack_name=s.stack_name,
        service=s.service,
        deployment_id=s.deployment_id,
        label_digest=s.label_digest,
        image=s.image,
        desired_replicas=s.desired_replicas,
        running_replicas=s.running_replicas,
        unhealthy_tasks=s.unhealthy_tasks,
        update_state=s.update_state,
        update_message=s.update_message,
        outside_change=s.outside_change,
        removed=removed,
    )
    if s.change_time:
        msg.change_time.FromNanoseconds(int(s.change_time * 1e9))
    return msg


class StatusReporter:
    def __init__(
        self,
        source: LiveStatusSource,
        send: Callable[[agent_pb2.AgentMessage], None],
        log: structlog.typing.FilteringBoundLogger,
        full_interval: float = DEFAULT_FULL_INTERVAL,
        debounce: float = DEBOUNCE,
    ) -> None:
        self._source = source
        self._send = send
        self._log = log
        self._full_interval = full_interval
        self._debounce = debounce
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        # What was last sent, by swarm service id.
        self._known: dict[str, LiveService] = {}

    async def run(self) -> None:
        """Report until cancelled (the stream's end)."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def changed(service_id: str) -> None:
            loop.call_soon_threadsafe(self._mark, service_id)

        threading.Thread(
            target=self._watch, args=(changed, stop), name="sami-status-events", daemon=True
        ).start()
        try:
            next_full = loop.time()
            while True:
                if loop.time() >= next_full:
                    self._pending.clear()  # the full read covers them
                    await self._report_full()
                    next_full = loop.time() + self._full_interval
                elif self._pending:
                    ids, self._pending = self._pending, set()
                    await self._report_changes(ids)
                self._wake.clear()
                if not self._pending:
                    try:
                        async with asyncio.timeout(max(0.0, next_full - loop.time())):
                            await self._wake.wait()
                    except TimeoutError:
                        continue
                    await asyncio.sleep(self._debounce)
        finally:
            stop.set()

    def _mark(self, service_id: str) -> None:
        self._pending.add(service_id)
        self._wake.set()

    def _watch(self, changed: Callable[[str], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._source.watch_changes(changed, stop)
            except Exception as exc:
                if stop.is_set():
                    return  # the stream ended: closing the client broke the read
                self._log.warning("status_events_failed", error=str(exc))
            if stop.wait(REWATCH_DELAY):
                return
            # Events missed while the stream was down: read everything again.
            changed("")

    async def _read(self, ids: set[str] | None) -> list[LiveService] | None:
        try:
            return await run_in_daemon_thread(
                lambda: self._source.live_services(ids), "sami-status"
            )
        except Exception as exc:
            self._log.warning("live_status_read_failed", error=str(exc))
            return None

    async def _report_full(self) -> None:
        services = await self._read(None)
        if services is None:
            return
        self._known = {s.service_id: s for s in services}
        self._send(
            agent_pb2.AgentMessage(
                live_status=agent_pb2.LiveStatus(
                    full=True, services=[live_service_message(s) for s in services]
                )
            )
        )

    async def _report_changes(self, ids: set[str]) -> None:
        if "" in ids:
            await self._report_full()
            return
        services = await self._read(ids)
        if services is None:
            return
        found = {s.service_id: s for s in services}
        out = []
        for sid in sorted(ids):
            now, before = found.get(sid), self._known.get(sid)
            if now is not None and now != before:
                out.append(live_service_message(now))
                self._known[sid] = now
            elif now is None and before is not None:
                out.append(live_service_message(before, removed=True))
                del self._known[sid]
        if out:
            self._send(
                agent_pb2.AgentMessage(live_status=agent_pb2.LiveStatus(full=False, services=out))
            )
