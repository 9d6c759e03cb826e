"""The agent's side of `AgentService.Connect` (docs/agent-protocol.md).

One `Agent` keeps one stream open to the control plane, re-opening it with jittered
exponential backoff whenever it breaks. Given several addresses (replicas of one control
plane) it starts on one chosen at random and moves to the next after each broken stream.
Jobs run in their own threads and do not care about the stream: while it is down their
progress is recorded on the lease and sent once the control plane has resumed the lease on a
new stream.

Everything here runs on one event loop; the only other threads are executor threads, which
reach the loop through `call_soon_threadsafe`. Lease state is therefore touched by one
thread only and needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import structlog

from sami_agent import package_version
from sami_agent.executor import (
    ExecutionResult,
    Executor,
    Outcome,
    PreviewLister,
    ProgressReporter,
    live_status_source,
)
from sami_agent.jobs import job_from_assignment, run_in_daemon_thread, seconds, slot_key
from sami_agent.leases import Lease
from sami_agent.live_status import DEFAULT_FULL_INTERVAL, StatusReporter
from sami_agent.metrics import AgentMetrics
from sami_agent.outgoing import clean
from sami_agent.pb import agent_pb2, agent_pb2_grpc
from sami_agent.queries import Queries
from sami_common import logs
from sami_common.addresses import AddressRing
from sami_common.backoff import Backoff
from sami_common.dial import IDLE_HEARTBEAT_FACTOR, Endpoint

if TYPE_CHECKING:
    from sami_agent import cron

AUTH_ERRORS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

# A heartbeat the control plane has not answered (with anything) within four heartbeat
# periods, and at least this long, means the stream is dead: the agent reconnects.
SILENCE_FLOOR = 3.0
# How often the preview stacks are reported (orphan reconciliation).
DEFAULT_INVENTORY_INTERVAL = 300.0
# Used when a Welcome carries no heartbeat interval.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
# Never heartbeat faster than this, whatever the server or a lease TTL says.
MIN_HEARTBEAT_INTERVAL = 0.02


def _cron_scheduler(
    backend: cron.CronBackend | None,
    interval: float | None,
    log: structlog.typing.FilteringBoundLogger,
) -> cron.CronScheduler | None:
    """The cron scheduler over `backend`, None without one (`interval`: seconds between
    passes; None: cron.DEFAULT_INTERVAL).

    sami_agent.cron (and the schedule parser: about 1 MB) is imported only with a backend:
    an agent that runs no cron jobs (a dry run, no engine) does without that memory.
    """
    if backend is None:
        return None
    from sami_agent import cron

    return cron.CronScheduler(
        backend, interval=cron.DEFAULT_INTERVAL if interval is None else interval, log=log
    )


class AgentAuthError(Exception):
    """The control plane rejected the agent's token and the agent was told to give up."""


class ProtocolError(Exception):
    """The control plane broke docs/agent-protocol.md (e.g. no Welcome first)."""


class StreamClosed(Exception):
    """The control plane ended the stream without an error status."""


class Agent:
    """Serves one control plane stream until `stop()`.

    `run()` returns after `stop()`; it raises AgentAuthError only when `exit_on_auth_error`
    is set and the token is rejected. Every other failure is logged and retried.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        executor: Executor,
        agent_id: str,
        *,
        exit_on_auth_error: bool = False,
        backoff: Backoff | None = None,
        welcome_timeout: float = 30.0,
        inventory_interval: float = DEFAULT_INVENTORY_INTERVAL,
        status_interval: float = DEFAULT_FULL_INTERVAL,
        cron_backend: cron.CronBackend | None = None,
        cron_interval: float | None = None,
        recipient: str = "",
        metrics: AgentMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._endpoint = endpoint
        # Each agent has its own random order of the replicas: N agents spread over them, and
        # the agents of a replica that dies spread over the others.
        self._ring = AddressRing.shuffled(endpoint.addresses, rng)
        self._executor = executor
        self._agent_id = agent_id
        # The public half of the agent's age key (sami_agent/keys.py), sent in every Hello.
        self._recipient = recipient
        self._exit_on_auth_error = exit_on_auth_error
        self._backoff = backoff or Backoff()
        self._welcome_timeout = welcome_timeout
        self._inventory_interval = inventory_interval
        self._status_interval = status_interval
        self._agent_log = logs.get("sami_agent").bind(agent_id=agent_id)
        # Names the replica of the current stream (set by each _session).
        self._log = self._agent_log.bind(control=self._ring.current)
        # Runs cron jobs on their schedule, given a backend (docs/cron.md); its log names
        # every address, since it outlives the streams.
        cron_log = self._agent_log.bind(control=endpoint.addr)
        self._cron = _cron_scheduler(cron_backend, cron_interval, cron_log)
        self._stopping = asyncio.Event()
        self._leases: dict[str, Lease] = {}
        # Messages for the current stream; None while there is no Welcomed stream (reports
        # are then only recorded on their lease and sent after the next Welcome).
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage] | None = None
        self._cluster = ""
        self._heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        # When the control plane last sent anything, and whether it answers heartbeats.
        self._last_heard = 0.0
        self._acks_heard = False
        # Per slot_key, a future resolved when the latest job of that slot has ended.
        self._slot_tails: dict[str, asyncio.Future[None]] = {}
        self._job_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Logs and plans the control plane asked for on the current stream (they end with it).
        self._queries = Queries(executor, self._send, lambda: self._log)
        self.metrics = metrics or AgentMetrics()
        self.metrics.describe_agent(agent_id, package_version())
        self.metrics.count_running(
            lambda: sum(1 for lease in self._leases.values() if lease.running)
        )

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Close the stream and make `run()` return. Call on the agent's event loop."""
        self._stopping.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop_waiter = asyncio.create_task(self._stopping.wait())
        # The cron scheduler runs for as long as the agent, connected or not: its reports
        # wait for the next Welcome (see _on_welcome).
        scheduler = (
            asyncio.create_task(self._cron.run(self._send, self._busy_stacks))
            if self._cron is not None
            else None
        )
        session: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                session = asyncio.create_task(self._session())
                await asyncio.wait({session, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    break  # stopping; the session is closed below
                delay = self._backoff.next_delay()
                # After a Welcome the backoff starts over, so a replica that dies under a
                # working stream is left for the next one within a fraction of a second.
                failed = self._ring.current
                self._ring.advance()
                self._explain_session_end(session, delay, failed)
                await asyncio.wait({stop_waiter}, timeout=delay)
        finally:
            stop_waiter.cancel()
            if scheduler is not None:
                scheduler.cancel()
                await asyncio.wait({scheduler})
            if session is not None and not session.done():
                # Cancelling the session closes its channel, so the control plane sees the
                # stream end now rather than at the next keepalive.
                session.cancel()
                await asyncio.wait({session})
            self._outbox = None
            running = [lease.lease_id for lease in self._leases.values() if lease.running]
            if running:
                self._log.warning(
                    "stopping_with_jobs_running",
                    leases=running,
                    message="their leases will expire on the control plane and the "
                    "deployments will be offered again",
                )
            for task in list(self._job_tasks):
                task.cancel()
            if self._job_tasks:
                await asyncio.wait(set(self._job_tasks))
            self._log.info("agent_stopped")

    def _explain_session_end(self, session: asyncio.Task[None], delay: float, failed: str) -> None:
        """Log why the stream to `failed` ended and when (and where) the agent retries; raise
        AgentAuthError if the token was rejected and the agent must not retry."""
        error = session.exception()
        log = self._log.bind(retry_in=round(delay, 2))
        if len(self._ring) > 1:
            log = log.bind(next_control=self._ring.current)
        if isinstance(error, grpc.aio.AioRpcError) and error.code() in AUTH_ERRORS:
            message = (
                f"the control plane at {failed} rejected this agent's token"
                f" ({error.code().name}: {error.details()}). Check that SAMI_TOKEN (or"
                " --token-file) holds an agent token for this cluster that has not been"
                " revoked."
            )
            if self._exit_on_auth_error:
                raise AgentAuthError(message) from error
            log.error(
                "token_rejected",
                message=message + " Retrying, in case the token is fixed or re-created.",
            )
        elif isinstance(error, grpc.aio.AioRpcError) and (
            error.code() == grpc.StatusCode.UNAVAILABLE
        ):
            log.warning("control_plane_unreachable", details=error.details())
        elif isinstance(error, grpc.aio.AioRpcError):
            log.warning(
                "stream_ended",
                code=error.code().name,
                details=error.details(),
            )
        elif isinstance(error, TimeoutError):
            log.warning(
                "welcome_timeout",
                message=f"no Welcome from the control plane within {self._welcome_timeout} s",
            )
        elif isinstance(error, StreamClosed | ProtocolError):
            event = "protocol_error" if isinstance(error, ProtocolError) else "stream_ended"
            log.warning(event, message=str(error))
        elif error is not None:
            log.error("connection_loop_error", exc_info=error)
        else:
            log.warning("stream_ended")

    # -- one stream ------------------------------------------------------------------

    async def _session(self) -> None:
        # A fresh channel per attempt: our backoff, not the channel's own reconnect backoff
        # (which grows to two minutes), decides how soon we try again. One address per
        # channel: TLS checks each replica's certificate against its own host name.
        address = self._ring.current
        self._log = self._agent_log.bind(control=address)
        channel = self._endpoint.at(address).aio_channel()
        self.metrics.session_started()
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            call = stub.Connect(metadata=self._endpoint.metadata())
            await call.write(clean(agent_pb2.AgentMessage(hello=self._hello())))
            first = await asyncio.wait_for(call.read(), self._welcome_timeout)
            if first is grpc.aio.EOF:
                raise StreamClosed("the control plane closed the stream before its Welcome")
            if first.WhichOneof("msg") != "welcome":
                raise ProtocolError(
                    f"the control plane sent {first.WhichOneof('msg')} before Welcome;"
                    " is it the same Sami version as this agent?"
                )
            outbox = self._on_welcome(first.welcome)
            self._backoff.reset()
            await self._serve(call, outbox)
        finally:
            self._outbox = None
            # Their answers had nowhere to go: the control plane ended their callers' streams.
            self._queries.cancel_all("the stream ended")
            self.metrics.session_ended()
            await channel.close(grace=None)

    async def _serve(
        self,
        call: grpc.aio.StreamStreamCall,
        outbox: asyncio.Queue[agent_pb2.AgentMessage],
    ) -> None:
        reader = asyncio.create_task(self._read_loop(call))
        writer = asyncio.create_task(self._write_loop(call, outbox))
        beats = asyncio.create_task(self._heartbeat_loop())
        inventory = asyncio.create_task(self._inventory_loop())
        status = asyncio.create_task(self._status_loop())
        tasks = {reader, writer, beats, inventory, status}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                # A failed write means the call is over; the reader is about to see why.
                await asyncio.wait({reader}, timeout=1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        for task in (reader, writer, beats, inventory, status):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        raise StreamClosed("the control plane closed the stream")

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            self._last_heard = asyncio.get_running_loop().time()
            self._dispatch(message)

    async def _write_loop(
        self,
        call: grpc.aio.StreamStreamCall,
        outbox: asyncio.Queue[agent_pb2.AgentMessage],
    ) -> None:
        while True:
            message = await outbox.get()
            try:
                # Every message but Hello leaves here: its free text is cleaned once, here.
                await call.write(clean(message))
            except asyncio.InvalidStateError:
                return  # the call finished; the reader reports how

    async def _heartbeat_loop(self) -> None:
        """Heartbeat every period while holding leases (they are renewed by heartbeats), every
        IDLE_HEARTBEAT_FACTOR periods while holding none; and end the stream when a
        heartbeat goes unanswered for too long (docs/agent-protocol.md).

        The loop wakes every period either way, so a lease received while idle is renewed
        from the next period on, and a missing answer is noticed on time.
        """
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._acks_heard = False
        periods_since_beat = 0
        # When the oldest heartbeat not answered yet (by any message) was sent.
        unanswered: float | None = None
        while True:
            period = self._heartbeat_period()
            await asyncio.sleep(period)
            periods_since_beat += 1
            now = loop.time()
            if unanswered is not None and self._last_heard >= unanswered:
                unanswered = None
            # A control plane that answers heartbeats (HeartbeatAck) and let one go
            # unanswered for a few periods is unreachable, even if the link shows no error.
            if (
                self._acks_heard
                and unanswered is not None
                and now - unanswered > max(4 * period, SILENCE_FLOOR)
            ):
                silence = now - self._last_heard
                raise StreamClosed(
                    f"no answer from the control plane for {silence:.0f} s; reconnecting"
                )
            if not self._leases and periods_since_beat < IDLE_HEARTBEAT_FACTOR:
                continue
            leases = [lease.held() for lease in self._leases.values()]
            self._send(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(leases=leases)))
            self.metrics.heartbeat_sent()
            periods_since_beat = 0
            if unanswered is None:
                unanswered = now

    async def _inventory_loop(self) -> None:
        """Report the preview stacks the swarm runs, after each Welcome and then
        periodically, so the control plane can tear down the ones whose pull request is
        gone. A failed listing is logged and tried again next time."""
        if not isinstance(self._executor, PreviewLister):
            # Nothing to report; but this task must not end: the stream is served until
            # its first task ends.
            await asyncio.Event().wait()
            return  # never reached; tells mypy the executor below is a PreviewLister
        lister = self._executor
        while True:
            try:
                stacks = await run_in_daemon_thread(lister.list_previews, "sami-inventory")
            except Exception as exc:
                self._log.warning("preview_inventory_failed", error=str(exc))
            else:
                self._send(
                    agent_pb2.AgentMessage(
                        inventory=agent_pb2.PreviewInventory(
                            stacks=[
                                agent_pb2.PreviewStack(
                                    stack_name=p.stack_name,
                                    service=p.service,
                                    pull_request=p.pull_request,
                                    deployment_id=p.deployment_id,
                                )
                                for p in stacks
                            ]
                        )
                    )
                )
            await asyncio.sleep(self._inventory_interval)

    async def _status_loop(self) -> None:
        """Report what the Sami services run (docs/status.md) for as long as the stream."""
        source = live_status_source(self._executor)
        if source is None:
            await asyncio.Event().wait()  # nothing to report; see _inventory_loop
            return
        reporter = StatusReporter(
            source, self._send, self._log, full_interval=self._status_interval
        )
        await reporter.run()

    def _heartbeat_period(self) -> float:
        # Heartbeat as the Welcome says, but also often enough for the shortest lease TTL
        # held: an assignment whose TTL is shorter than the interval must not expire. (An
        # agent holding no lease heartbeats every IDLE_HEARTBEAT_FACTOR of these.)
        period = self._heartbeat_interval
        for lease in self._leases.values():
            if lease.lease_ttl > 0:
                period = min(period, lease.lease_ttl / 3)
        return max(period, MIN_HEARTBEAT_INTERVAL)

    def _hello(self) -> agent_pb2.Hello:
        return agent_pb2.Hello(
            agent_id=self._agent_id,
            version=package_version(),
            capabilities=list(self._executor.capabilities),
            held_leases=[lease.held() for lease in self._leases.values()],
            recipient=self._recipient,
        )

    def _on_welcome(self, welcome: agent_pb2.Welcome) -> asyncio.Queue[agent_pb2.AgentMessage]:
        resumed = {(held.lease_id, held.epoch) for held in welcome.resumed_leases}
        for lease in list(self._leases.values()):
            if (lease.lease_id, lease.epoch) not in resumed:
                self._drop(lease, "the control plane did not resume it (expired or finished)")
        self._cluster = welcome.cluster
        self._heartbeat_interval = seconds(welcome.heartbeat_interval) or DEFAULT_HEARTBEAT_INTERVAL
        # Queue everything the control plane has not confirmed before any new report, so
        # each lease's sequence arrives in order and without gaps.
        outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        for lease in self._leases.values():
            for message in lease.unconfirmed():
                outbox.put_nowait(message)
        if self._cron is not None:
            for message in self._cron.pending():
                outbox.put_nowait(message)
        self._outbox = outbox
        self.metrics.welcomed()
        self._log.info(
            "control_plane_connected",
            cluster=welcome.cluster,
            heartbeat_interval=self._heartbeat_interval,
            resumed_leases=sorted(self._leases),
            resent=outbox.qsize(),
        )
        return outbox

    def _busy_stacks(self) -> set[str]:
        """Stacks this agent is deploying right now: their cron jobs are not started
        meanwhile (the deployment's `docker stack deploy` would race the start)."""
        return {lease.job.stack_name for lease in self._leases.values() if lease.running}

    def _send(self, message: agent_pb2.AgentMessage) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(message)

    # -- control messages --------------------------------------------------------------

    def _dispatch(self, message: agent_pb2.ControlMessage) -> None:
        kind = message.WhichOneof("msg")
        if kind == "assignment":
            self._on_assignment(message.assignment)
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "revoke":
            self._on_revoke(message.revoke)
        elif kind == "done":
            self._on_done(message.done)
        elif kind == "heartbeat_ack":
            self._acks_heard = True
        elif kind == "cron_run_ack" and self._cron is not None:
            self._cron.acknowledged(message.cron_run_ack)
        elif kind == "query":
            self._queries.start(message.query)
        elif kind == "query_cancel":
            self._queries.cancel(message.query_cancel.id, message.query_cancel.reason)
        else:
            # A newer control plane may send messages this agent does not know yet.
            self._log.warning(
                "message_ignored", reason="unexpected from the control plane", kind=kind
            )

    def _find(self, lease_id: str, deployment_id: str) -> Lease | None:
        if not lease_id:
            # Tolerate a message naming only the deployment: at most one lease per deployment.
            return next(
                (lease for lease in self._leases.values() if lease.deployment_id == deployment_id),
                None,
            )
        lease = self._leases.get(lease_id)
        if lease is None or (deployment_id and lease.deployment_id != deployment_id):
            return None
        return lease

    def _on_assignment(self, assignment: agent_pb2.Assignment) -> None:
        deployment = assignment.deployment
        if not assignment.lease_id or not deployment.id:
            self._log.error(
                "assignment_ignored",
                reason="no lease id or deployment id",
                lease_id=assignment.lease_id,
                deployment_id=deployment.id,
            )
            return
        ack = agent_pb2.AgentMessage(
            ack=agent_pb2.Ack(
                deployment_id=deployment.id, lease_id=assignment.lease_id, epoch=deployment.epoch
            )
        )
        known = self._leases.get(assignment.lease_id)
        if known is not None and known.epoch == deployment.epoch:
            self._send(ack)  # delivered twice: acknowledge again, run once
            return
        # The newest lease of a deployment wins; an older one here is no longer ours.
        for other in list(self._leases.values()):
            if other.deployment_id == deployment.id or other.lease_id == assignment.lease_id:
                self._drop(other, f"superseded by lease {assignment.lease_id}")
        job = job_from_assignment(assignment)
        log = self._log.bind(
            deployment_id=job.deployment_id,
            service=job.service,
            environment=job.environment,
            cluster=deployment.cluster or self._cluster,
            lease_id=assignment.lease_id,
            epoch=deployment.epoch,
            attempt=job.attempt,
        )
        if job.pull_request:
            log = log.bind(pull_request=job.pull_request)
        lease = Lease(
            deployment_id=job.deployment_id,
            lease_id=assignment.lease_id,
            epoch=deployment.epoch,
            job=job,
            lease_ttl=seconds(assignment.lease_ttl),
            log=log,
        )
        self._leases[lease.lease_id] = lease
        self._send(ack)
        log.info(
            "assignment_received",
            deployment_type=job.deployment_type,
            stack_name=job.stack_name,
            artifact=job.artifact_ref,
        )
        task = asyncio.create_task(self._run_job(lease))
        self._job_tasks.add(task)
        task.add_done_callback(self._job_tasks.discard)

    def _on_cancel(self, cancel: agent_pb2.Cancel) -> None:
        lease = self._find(cancel.lease_id, cancel.deployment_id)
        if lease is None:
            self._log.info(
                "cancel_ignored",
                reason="a lease this agent does not hold",
                deployment_id=cancel.deployment_id,
                lease_id=cancel.lease_id,
            )
            return
        lease.cancel_reason = cancel.reason
        lease.cancelled.set()
        lease.log.info("cancel_requested", reason=cancel.reason)

    def _on_revoke(self, revoke: agent_pb2.Revoke) -> None:
        lease = self._find(revoke.lease_id, revoke.deployment_id)
        if lease is None:
            self._log.info(
                "revoke_ignored",
                reason="a lease this agent does not hold",
                deployment_id=revoke.deployment_id,
                lease_id=revoke.lease_id,
            )
            return
        self._drop(lease, f"revoked by the control plane: {revoke.reason}")

    def _on_done(self, done: agent_pb2.Done) -> None:
        lease = self._find(done.lease_id, done.deployment_id)
        if lease is None:
            return  # a Done for a result we re-sent after it was already stored
        if lease.running:
            self._drop(lease, "the control plane finished the lease before the job did")
            return
        lease.dropped = True
        del self._leases[lease.lease_id]
        lease.log.info("result_stored")

    def _drop(self, lease: Lease, why: str) -> None:
        """Stop reporting on a lease. No rollback: another agent may own it now."""
        lease.dropped = True
        self._leases.pop(lease.lease_id, None)
        lease.log.warning(
            "lease_reporting_stopped",
            why=why,
            still_running=lease.running,
        )

    # -- jobs ----------------------------------------------------------------------------

    async def _run_job(self, lease: Lease) -> None:
        job = lease.job
        key = slot_key(job)
        previous = self._slot_tails.get(key)
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_tails[key] = finished
        try:
            if previous is not None and not previous.done():
                self._report(
                    lease,
                    "queue",
                    f"waiting for an earlier run of stack {job.stack_name} on this agent to end",
                )
                # Shielded: if this task is cancelled, the earlier job's future must not be.
                await asyncio.shield(previous)
            if lease.dropped:
                return
            if lease.cancelled.is_set():
                reason = f"cancelled before it started: {lease.cancel_reason or 'no reason'}"
                self._finish(lease, ExecutionResult(Outcome.CANCELLED, reason))
                return
            capabilities = self._executor.capabilities
            if job.deployment_type not in capabilities:
                reason = (
                    f"this agent cannot run {job.deployment_type or 'untyped'} deployments"
                    f" (it runs: {', '.join(capabilities)}); serve this cluster with an agent"
                    " that has that capability"
                )
                self._finish(lease, ExecutionResult(Outcome.FAILED, reason))
                return
            report = self._reporter(lease)
            try:
                result = await run_in_daemon_thread(
                    lambda: self._execute(lease, report), name=f"job-{job.deployment_id}"
                )
            except Exception as exc:
                lease.log.exception("executor_raised")
                result = ExecutionResult(Outcome.FAILED, f"the agent's executor crashed: {exc!r}")
            self._finish(lease, result)
        finally:
            if not finished.done():
                finished.set_result(None)
            if self._slot_tails.get(key) is finished:
                del self._slot_tails[key]

    def _execute(self, lease: Lease, report: ProgressReporter) -> ExecutionResult:
        # Runs in the job's thread. Bound here so the executor's own log lines carry the
        # job's context too.
        job = lease.job
        structlog.contextvars.bind_contextvars(
            agent_id=self._agent_id,
            deployment_id=job.deployment_id,
            service=job.service,
            environment=job.environment,
            cluster=self._cluster,
            lease_id=lease.lease_id,
        )
        return self._executor.execute(job, report, lease.cancelled)

    def _reporter(self, lease: Lease) -> ProgressReporter:
        loop = self._loop
        assert loop is not None, "jobs only start while run() is running"

        def report(phase: str, message: str) -> None:
            # The loop is closed once the agent has stopped: the report has nowhere to go.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._report, lease, str(phase), str(message))

        return report

    def _report(self, lease: Lease, phase: str, message: str) -> None:
        if lease.dropped or lease.result is not None:
            return
        progress = lease.add_progress(phase, message)
        lease.log.info("progress", phase=phase, message=message, sequence=progress.sequence)
        self._send(agent_pb2.AgentMessage(progress=progress))

    def _finish(self, lease: Lease, result: ExecutionResult) -> None:
        if lease.dropped:
            self.metrics.job_ended("dropped", lease.received_at)
            lease.log.info(
                "job_ended_unreported",
                why="its lease was dropped",
                outcome=result.outcome.value,
                reason=result.reason,
            )
            return
        message = lease.set_result(result)
        self.metrics.job_ended(result.outcome.value, lease.received_at)
        lease.log.info("job_ended", outcome=result.outcome.value, reason=message.reason)
        self._send(agent_pb2.AgentMessage(result=message))
