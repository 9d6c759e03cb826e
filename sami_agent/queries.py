"""The agent's side of queries (docs/agent-protocol.md, "Queries"): the control plane asks
(a service's logs, a deployment's plan), the agent answers with QueryChunk messages and a
QueryEnd, on the stream the query came on.

Each query runs in a daemon thread (the Docker SDK blocks); lines reach the event loop
through `call_soon_threadsafe` and leave in chunks (the lines that arrived in one turn of
the loop). The agent keeps the bounds the query names — lines, bytes, lines per second:
it waits rather than sends faster — and stops a query when told (QueryCancel), when the
stream it came on ends, or when a bound is reached.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import structlog

from sami_agent.executor import Job
from sami_agent.executors.routing import RoutingExecutor
from sami_agent.jobs import job_from_assignment, run_in_daemon_thread, seconds
from sami_agent.pb import agent_pb2, query_pb2

# Queries one agent runs at once whatever the control plane asks (it has its own limit).
MAX_RUNNING = 16
# Lines per QueryChunk at most.
CHUNK_LINES = 500
# A paced stream's lines leave in chunks this often, not one line a chunk as they come
# (bench figure 18: one line a chunk tripled the CPU per line of the agent, the control
# plane and the CLI). Latency a reader of a follow does not notice.
PACED_FLUSH_SECONDS = 0.05
PACER_MIN_WAIT = 0.01


class QueryError(Exception):
    """The query cannot be answered; `code` is the gRPC status name the caller gets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LogsRequest:
    stack_name: str
    service: str  # one compose service of the stack; empty: all of them
    since: float | None  # seconds back from now
    tail: int  # lines per task; 0: all
    follow: bool


@dataclass(frozen=True)
class LogLine:
    task: str
    stream: str  # stdout | stderr
    time: datetime | None
    text: str


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class ServiceChange:
    name: str
    action: str  # create | update | unchanged | not_pruned
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class StackDiff:
    stack_name: str
    image: str
    services: tuple[ServiceChange, ...] = field(default_factory=tuple)


@runtime_checkable
class QueryAnswerer(Protocol):
    """Executors that can read the swarm answer queries (the Swarm executor)."""

    def service_logs(
        self, req: LogsRequest, emit: Callable[[LogLine], bool], cancelled: threading.Event
    ) -> None: ...

    def stack_diff(self, job: Job) -> StackDiff: ...


class Pacer:
    """The bounds of one query, kept in its thread: `take` answers whether one more line of
    `size` bytes may be sent, and waits as long as the rate asks."""

    def __init__(self, max_lines: int, max_bytes: int, rate: float) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.rate = rate
        self.lines = 0
        self.size = 0
        self.started = time.monotonic()
        self.over = ""
        # The logs of a stack's services are read in a thread each.
        self._lock = threading.Lock()

    def take(self, size: int, cancelled: threading.Event) -> bool:
        with self._lock:
            due = self._count(size)
        if due is None:
            return False
        wait = due - time.monotonic()
        # Waits shorter than PACER_MIN_WAIT are skipped: the lines after them wait longer
        # (each line's time is counted from the start), so the rate holds, without a
        # thread wait per line (half the agent's CPU of a paced stream).
        return not (wait > PACER_MIN_WAIT and cancelled.wait(wait))

    def _count(self, size: int) -> float | None:
        """When the line may leave (None: never, a bound is reached)."""
        if self.max_lines > 0 and self.lines + 1 > self.max_lines:
            self.over = f"{self.max_lines} lines"
            return None
        if self.max_bytes > 0 and self.size + size > self.max_bytes:
            self.over = f"{self.max_bytes} bytes"
            return None
        self.lines += 1
        self.size += size
        if self.rate <= 0:
            return 0.0
        # One second of burst; past it, the line waits for its turn.
        return self.started + (self.lines - self.rate) / self.rate


@dataclass(eq=False)
class _Running:
    id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    pending: list[query_pb2.LogLine] = field(default_factory=list)
    flush_scheduled: bool = False
    # 0: what arrives in one turn of the loop leaves together; else, gathered this long.
    flush_delay: float = 0.0
    flush_timer: asyncio.TimerHandle | None = None


class Queries:
    """The queries this agent is answering, on the current stream."""

    def __init__(
        self,
        executor: object,
        send: Callable[[agent_pb2.AgentMessage], None],
        log: Callable[[], structlog.typing.FilteringBoundLogger],
    ) -> None:
        self._executor = executor
        self._send = send
        self._log = log
        self._running: dict[str, _Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._running)

    def start(self, query: query_pb2.Query) -> None:
        if not query.id or query.id in self._running:
            return
        answerer = answerer_of(self._executor)
        kind = query.WhichOneof("kind")
        if answerer is None:
            self._end(query.id, "FAILED_PRECONDITION", "this agent's executor cannot read a swarm")
            return
        if kind not in ("logs", "plan"):
            self._end(query.id, "FAILED_PRECONDITION", f"this agent does not know {kind} queries")
            return
        if len(self._running) >= MAX_RUNNING:
            self._end(query.id, "RESOURCE_EXHAUSTED", f"this agent runs {MAX_RUNNING} queries")
            return
        running = _Running(query.id)
        self._running[query.id] = running
        # Accepted: the control plane's answer deadline is met, even if no line comes yet.
        self._send(agent_pb2.AgentMessage(query_chunk=query_pb2.QueryChunk(id=query.id)))
        task = asyncio.get_running_loop().create_task(self._run(answerer, query, running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, query_id: str, reason: str) -> None:
        running = self._running.pop(query_id, None)
        if running is not None:
            running.cancelled.set()
            self._log().info("query_cancelled", query_id=query_id, reason=reason)

    def cancel_all(self, reason: str) -> None:
        for query_id in list(self._running):
            self.cancel(query_id, reason)

    async def _run(self, answerer: QueryAnswerer, query: query_pb2.Query, r: _Running) -> None:
        code, error = "", ""
        try:
            if query.WhichOneof("kind") == "logs":
                code, error = await self._logs(answerer, query, r)
            else:
                diff = await run_in_daemon_thread(
                    lambda: answerer.stack_diff(_plan_job(query.plan)), "sami-plan"
                )
                if not r.cancelled.is_set():
                    self._send(
                        agent_pb2.AgentMessage(
                            query_chunk=query_pb2.QueryChunk(id=r.id, plan=_plan_message(diff))
                        )
                    )
        except QueryError as exc:
            code, error = exc.code, str(exc)
        except Exception as exc:
            self._log().exception("query_failed", query_id=r.id)
            code, error = "UNAVAILABLE", f"the agent failed to answer: {exc!r}"
        if r.cancelled.is_set():
            return  # the control plane forgot it: nothing more to send
        self._flush(r)
        self._running.pop(r.id, None)
        self._end(r.id, code, error)

    async def _logs(
        self, answerer: QueryAnswerer, query: query_pb2.Query, r: _Running
    ) -> tuple[str, str]:
        q = query.logs
        req = LogsRequest(
            stack_name=q.stack_name,
            service=q.service,
            since=seconds(q.since) if q.HasField("since") else None,
            tail=q.tail,
            follow=q.follow,
        )
        pacer = Pacer(query.max_lines, query.max_bytes, query.lines_per_second)
        if query.lines_per_second > 0:
            r.flush_delay = PACED_FLUSH_SECONDS
        loop = asyncio.get_running_loop()

        def emit(line: LogLine) -> bool:
            message = query_pb2.LogLine(task=line.task, stream=line.stream, text=line.text)
            if line.time is not None:
                message.time.FromDatetime(line.time)
            if not pacer.take(len(line.text) + len(line.task) + 16, r.cancelled):
                return False
            loop.call_soon_threadsafe(self._buffer, r, message)
            return not r.cancelled.is_set()

        await run_in_daemon_thread(
            lambda: answerer.service_logs(req, emit, r.cancelled), f"sami-logs-{r.id}"
        )
        if pacer.over:
            return "RESOURCE_EXHAUSTED", (
                f"the stream reached its limit of {pacer.over}; narrow it with --since or --tail"
            )
        return "", ""

    def _buffer(self, r: _Running, line: query_pb2.LogLine) -> None:
        if r.cancelled.is_set():
            return
        r.pending.append(line)
        if not r.flush_scheduled:
            r.flush_scheduled = True
            loop = asyncio.get_running_loop()
            if r.flush_delay > 0:
                r.flush_timer = loop.call_later(r.flush_delay, self._flush, r)
            else:
                # The lines that arrive in this turn of the loop leave in one chunk.
                loop.call_soon(self._flush, r)

    def _flush(self, r: _Running) -> None:
        r.flush_scheduled = False
        if r.flush_timer is not None:  # flushed early: before the end marker
            r.flush_timer.cancel()
            r.flush_timer = None
        lines, r.pending = r.pending, []
        if r.cancelled.is_set():
            return
        for i in range(0, len(lines), CHUNK_LINES):
            self._send(
                agent_pb2.AgentMessage(
                    query_chunk=query_pb2.QueryChunk(id=r.id, lines=lines[i : i + CHUNK_LINES])
                )
            )

    def _end(self, query_id: str, code: str, error: str) -> None:
        self._send(
            agent_pb2.AgentMessage(
                query_end=query_pb2.QueryEnd(id=query_id, code=code, error=error[:2000])
            )
        )


def answerer_of(executor: object) -> QueryAnswerer | None:
    """The executor that answers queries: the agent's own, or the one its router sends
    swarm deployments to."""
    if isinstance(executor, RoutingExecutor):
        executor = executor.executors.get("swarm")
    return executor if isinstance(executor, QueryAnswerer) else None


def _plan_job(plan: query_pb2.PlanQuery) -> Job:
    """The Job an assignment of the planned deployment would be (swarm_apply builds from
    it exactly what it would deploy)."""
    return job_from_assignment(
        agent_pb2.Assignment(
            lease_id="plan", deployment=plan.deployment, files=plan.files, manifest=plan.manifest
        )
    )


def _plan_message(diff: StackDiff) -> query_pb2.PlanDeploymentResponse:
    return query_pb2.PlanDeploymentResponse(
        stack_name=diff.stack_name,
        image=diff.image,
        services=[
            query_pb2.ServicePlan(
                name=s.name,
                action=s.action,
                changes=[
                    query_pb2.FieldChange(field=c.field, before=c.before, after=c.after)
                    for c in s.changes
                ],
            )
            for s in diff.services
        ],
    )
