"""The agent reports live status (docs/status.md): everything after the Welcome, then only
the services Docker's events name, once their state really changed, and removals."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection
from dataclasses import replace

from sami_agent.executor import ExecutionResult, Job, LiveService, Outcome, ProgressReporter
from tests.agent.agent_fakes import connect, running_agent


def _svc(sid: str, running: int = 2) -> LiveService:
    return LiveService(
        service_id=sid,
        stack_name="stage_web",
        service=f"svc-{sid}",
        deployment_id="dep_1",
        label_digest="sha256:" + "a" * 64,
        image="web@sha256:" + "a" * 64,
        desired_replicas=2,
        running_replicas=running,
        unhealthy_tasks=0,
        update_state="completed",
        update_message="",
        change_time=1700000000.5,
    )


class LiveExecutor:
    """A swarm that runs `services`; `event(id)` is Docker's event stream naming a service."""

    capabilities = ("swarm",)

    def __init__(self) -> None:
        self.services = {"s1": _svc("s1"), "s2": _svc("s2")}
        self.reads: list[Collection[str] | None] = []
        self._changed: Callable[[str], None] | None = None
        self.watching = threading.Event()

    def live_services(self, service_ids: Collection[str] | None = None) -> list[LiveService]:
        self.reads.append(None if service_ids is None else sorted(service_ids))
        return [s for sid, s in self.services.items() if service_ids is None or sid in service_ids]

    def watch_changes(self, changed: Callable[[str], None], stop: threading.Event) -> None:
        self._changed = changed
        self.watching.set()
        stop.wait()

    def event(self, sid: str) -> None:
        assert self._changed is not None
        self._changed(sid)

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        return ExecutionResult(Outcome.SUCCEEDED, "")


def test_full_report_then_changes_only() -> None:
    async def scenario() -> None:
        executor = LiveExecutor()
        async with running_agent(executor, status_interval=60.0) as (control, _, _):
            stream, _ = await connect(control)
            full = (await stream.recv_kind("live_status")).live_status
            assert full.full
            assert [(s.service, s.running_replicas) for s in full.services] == [
                ("svc-s1", 2),
                ("svc-s2", 2),
            ]
            assert full.services[0].change_time.seconds == 1700000000
            assert await asyncio.to_thread(executor.watching.wait, 5.0)

            # An event whose service did not change sends nothing.
            executor.event("s1")
            assert [
                m for m in await stream.quiet(0.6) if m.WhichOneof("msg") == "live_status"
            ] == []

            # Three events of one change: one read of that service, one report.
            executor.services["s1"] = replace(_svc("s1"), running_replicas=1)
            for _ in range(3):
                executor.event("s1")
            change = (await stream.recv_kind("live_status")).live_status
            assert not change.full
            assert [(s.service, s.running_replicas, s.removed) for s in change.services] == [
                ("svc-s1", 1, False)
            ]
            assert executor.reads[-1] == ["s1"]

            del executor.services["s2"]
            executor.event("s2")
            gone = (await stream.recv_kind("live_status")).live_status
            assert [(s.service, s.removed) for s in gone.services] == [("svc-s2", True)]

    asyncio.run(scenario())


def test_full_report_again_after_the_interval() -> None:
    async def scenario() -> None:
        executor = LiveExecutor()
        async with running_agent(executor, status_interval=0.3) as (control, _, _):
            stream, _ = await connect(control)
            assert (await stream.recv_kind("live_status")).live_status.full
            executor.services.clear()
            again = (await stream.recv_kind("live_status")).live_status
            assert again.full and list(again.services) == []

    asyncio.run(scenario())
