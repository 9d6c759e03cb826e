"""Follow a deployment to its end for `sami deploy --wait` and `sami watch`: stream progress
lines live, resume across control-plane restarts, and turn the outcome into an exit status."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TextIO

from sami_client import argtypes, github_actions, render
from sami_client.client import TERMINAL_STATES, ReconnectCallback, SamiClient
from sami_client.errors import ExitCode, QueueTimeout, SamiError, UsageError, WatchTimeout
from sami_client.pb import cluster_pb2, deployment_pb2, lock_pb2
from sami_common.durations import format_seconds

DEFAULT_WAIT_TIMEOUT = 30 * 60.0

# How long to keep trying to read the outcome after the terminal event arrived.
_OUTCOME_READ_TIMEOUT = 30.0


# A deployment is normally assigned within a second of being queued: after this long,
# the wait says why it is not (no agent connected, when one last was).
QUEUE_FIRST_CHECK = 5.0
QUEUE_CHECK_EVERY = 60.0


def add_wait_options(p: argparse.ArgumentParser) -> None:
    """`--wait`, `--timeout` and `--queue-timeout`, as every command that requests a
    deployment takes them (deploy, rollback, promote, teardown)."""
    p.add_argument("--wait", action="store_true", help="follow the deployment to its end")
    p.add_argument(
        "--timeout",
        type=argtypes.duration,
        metavar="DURATION",
        help="with --wait: give up after this long, exit 3: 90, 90s, 15m, 1h30m "
        f"(default {format_seconds(DEFAULT_WAIT_TIMEOUT)}; 0: never)",
    )
    p.add_argument(
        "--queue-timeout",
        type=argtypes.duration,
        metavar="DURATION",
        help="with --wait: exit 3 if no agent has picked the deployment up after DURATION "
        "(it stays queued)",
    )


def check_wait_options(args: argparse.Namespace, timeout_also_for: str = "") -> None:
    """The limits of a wait make no sense without --wait: say so (exit 2). `--timeout`
    also bounds the wait `timeout_also_for` names (`--wait-lock`), when it was given."""
    for option, value in (("--timeout", args.timeout), ("--queue-timeout", args.queue_timeout)):
        if option == "--timeout" and timeout_also_for:
            continue
        if value is not None and not args.wait:
            raise UsageError(f"{option} limits --wait: add --wait, or drop {option}")


def wait_timeout(seconds: float | None) -> float | None:
    """The wait limit a `--timeout` option means: not given, the default; 0, no limit."""
    if seconds is None:
        return DEFAULT_WAIT_TIMEOUT
    return seconds or None


def outcome_exit_code(state: deployment_pb2.DeploymentState) -> int:
    if state == deployment_pb2.SUCCEEDED:
        return int(ExitCode.SUCCEEDED)
    if state in TERMINAL_STATES:
        return int(ExitCode.DEPLOYMENT_FAILED)
    # Not finished: only reachable if the wait ended early, whose outcome is unknown.
    return int(ExitCode.UNREACHABLE)


class Follower:
    # How soon a wait looks at the agents of a QUEUED deployment's cluster, and how often it
    # says again that the deployment is still queued (seconds).
    queue_first_check = QUEUE_FIRST_CHECK
    queue_check_every = QUEUE_CHECK_EVERY

    def __init__(
        self,
        client: SamiClient,
        console: render.Console,
        *,
        json_output: bool,
        env: Mapping[str, str],
    ) -> None:
        self._client = client
        self._console = console
        self._json = json_output
        self._env = env
        self._github = github_actions.enabled(env)

    def follow(
        self,
        deployment_id: str,
        timeout: float | None,
        *,
        write_outputs: bool = True,
        queue_timeout: float | None = None,
    ) -> int:
        """Print every event of the deployment until it ends; return the exit status.
        Raises SamiError when the wait cannot finish (rejected, unreachable, timed out).
        `write_outputs`: record the deployment in $GITHUB_OUTPUT as soon as it is known.
        While the deployment is QUEUED, says on stderr whether an agent of its cluster is
        connected (within seconds, then at intervals); `queue_timeout`: give up (exit 3,
        QueueTimeout) when no agent picked it up in that many seconds."""
        started = time.monotonic()
        seen: list[deployment_pb2.Deployment] = []
        try:
            snapshot, terminal = self._stream(
                deployment_id, timeout, write_outputs, seen, started, queue_timeout
            )
        except (WatchTimeout, QueueTimeout) as err:
            if seen:
                self._summary(seen[-1], f"⏱️ not known: {err.message}; `sami watch {deployment_id}`")
            raise
        final = self._outcome(snapshot, terminal, started, timeout)
        if self._json:
            self._console.print(render.to_json({"deployment": render.to_dict(final)}))
        else:
            self._console.print(render.outcome_line(final))
        if self._github and final.state != deployment_pb2.SUCCEEDED:
            github_actions.error(self._annotation_stream(), render.outcome_line(final))
        self._summary(final)
        return outcome_exit_code(final.state)

    def _stream(
        self,
        deployment_id: str,
        timeout: float | None,
        write_outputs: bool,
        seen: list[deployment_pb2.Deployment],
        started: float,
        queue_timeout: float | None,
    ) -> tuple[deployment_pb2.Deployment, deployment_pb2.DeploymentEvent | None]:
        """Print the deployment's events until it ends; returns the deployment as the watch
        began and the terminal event, if the watch saw it. Appends each snapshot to `seen`,
        which the caller still has when the wait fails."""
        deadline = None if timeout is None else started + timeout
        queue = _QueueWait(started, queue_timeout, self.queue_first_check, self.queue_check_every)
        terminal: deployment_pb2.DeploymentEvent | None = None
        last = 0
        with self._group(f"sami: deployment {deployment_id}"):
            while True:
                # While queued, the watch is cut at the next check: each turn resumes it
                # after the last event shown, so nothing is shown twice or missed.
                until = _earliest(deadline, queue.wake_at())
                try:
                    for item in self._client.watch(
                        deployment_id,
                        after_sequence=last,
                        timeout=None if until is None else max(0.0, until - time.monotonic()),
                        on_reconnect=self._on_reconnect(deployment_id),
                    ):
                        if isinstance(item, deployment_pb2.Deployment):
                            queue.seen(item.state)
                            queue.unreachable = ""
                            if not seen:
                                if write_outputs:
                                    self.write_outputs(item)
                                if not self._json:
                                    self._console.print(render.watch_header(item))
                                if item.state == deployment_pb2.AWAITING_APPROVAL:
                                    self._say_awaiting(item, deadline)
                            seen.append(item)
                            continue
                        last = item.sequence
                        queue.seen(item.state)
                        if item.state in TERMINAL_STATES:
                            terminal = item
                        if self._json:
                            self._console.print(render.to_json({"event": render.to_dict(item)}))
                        else:
                            self._console.print(render.event_line(item))
                    break
                except WatchTimeout as err:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        raise WatchTimeout(deployment_id, timeout, last, err.last_error) from None
                    if err.last_error is not None:
                        # Reconnecting, not waiting for an agent: say that instead.
                        queue.unreachable = (
                            "sami-control could not be reached to follow it "
                            f"({err.last_error.code.name}: {err.last_error.message})"
                        )
                    if queue.timed_out(now):
                        assert queue_timeout is not None
                        why = queue.unreachable or queue.why
                        raise QueueTimeout(deployment_id, queue_timeout, why) from None
                    if seen and queue.check_due(now):
                        self._say_why_queued(seen[-1], queue, now - started)
        assert seen, "a watch yields the deployment before anything else"
        return seen[-1], terminal

    def _say_awaiting(self, deployment: deployment_pb2.Deployment, deadline: float | None) -> None:
        """One line on stderr: the wait goes on until someone approves or rejects it."""
        left = (
            f"up to {format_seconds(max(0.0, deadline - time.monotonic()))} (--timeout)"
            if deadline is not None
            else "with no time limit"
        )
        self._console.note(
            f"deployment {deployment.id} is AWAITING_APPROVAL ({deployment.status_message}); "
            f"waiting for it {left}"
        )

    def _say_why_queued(
        self, deployment: deployment_pb2.Deployment, queue: _QueueWait, waited: float
    ) -> None:
        """One line on stderr: the deployment is still QUEUED, and what the agents of its
        cluster say about why."""
        cluster = deployment.cluster
        try:
            # A lock taken after it was queued holds it (the dispatcher skips it).
            locks = self._client.list_locks(deployment.environment, deployment.service)
        except SamiError:
            locks = []  # a sami-control without locks (older): the agents say why
        try:
            agents = [] if locks else self._client.list_agents(cluster)
        except SamiError as err:
            queue.why = f"the agents of cluster {cluster} could not be listed ({err.message})"
        else:
            queue.why = (
                f"{locked_reason(locks[0])} (`sami locks`)"
                if locks
                else queued_reason(deployment, agents, time.time())
            )
        self._console.note(
            f"deployment {deployment.id} still QUEUED after {waited:.0f}s: {queue.why}"
        )

    def started(
        self,
        deployment: deployment_pb2.Deployment,
        *,
        wait: bool,
        timeout: float | None,
        queue_timeout: float | None = None,
    ) -> int:
        """What `sami deploy` (and rollback, promote, teardown) do with the deployment they
        just requested: with `wait`, follow it to its end (`timeout`: a `--timeout` value, see
        `wait_timeout`); without, say how to follow it and print its id, last on stdout for
        `id=$(sami deploy ... | tail -n1)`. Returns the exit status."""
        # Recorded before waiting, so a later step can find the deployment even if the wait fails.
        self.write_outputs(deployment)
        if wait:
            return self.follow(
                deployment.id,
                wait_timeout(timeout),
                write_outputs=False,
                queue_timeout=queue_timeout or None,
            )
        self._summary(
            deployment,
            f"⏳ {render.state_name(deployment.state)}, not waited for: "
            f"`sami watch {deployment.id}` follows it",
        )
        if self._json:
            self._console.print(render.to_json(deployment))
        else:
            self._console.note(
                f"deployment {deployment.id} {render.state_name(deployment.state)}: "
                f"{render.what(deployment)}; follow it with `sami watch {deployment.id}`"
            )
            if deployment.state == deployment_pb2.AWAITING_APPROVAL:
                self._console.note(deployment.status_message)
            self._console.print(deployment.id)
        return int(ExitCode.SUCCEEDED)

    def _summary(self, deployment: deployment_pb2.Deployment, outcome: str = "") -> None:
        """Under GitHub Actions, a block about the deployment on the run's summary page."""
        if self._github:
            github_actions.write_summary(self._env, render.step_summary(deployment, outcome))

    def write_outputs(self, deployment: deployment_pb2.Deployment) -> None:
        if self._github:
            github_actions.write_outputs(
                self._env,
                {"deployment_id": deployment.id, "digest": deployment.artifact.digest},
            )

    def _outcome(
        self,
        snapshot: deployment_pb2.Deployment,
        terminal: deployment_pb2.DeploymentEvent | None,
        started: float,
        timeout: float | None,
    ) -> deployment_pb2.Deployment:
        """The deployment as it ended, with the status message the events don't carry."""
        if terminal is None:
            return snapshot  # It had already ended when the watch began.
        retry_for = _OUTCOME_READ_TIMEOUT
        if timeout is not None:
            retry_for = max(1.0, min(retry_for, timeout - (time.monotonic() - started)))
        try:
            return self._client.get_deployment(snapshot.id or snapshot.name, retry_for=retry_for)
        except SamiError as err:
            # The outcome is known from the terminal event; don't turn a success into an error
            # because the control plane went away a moment later.
            self._console.error(
                f"could not read the final status ({err.code.name}: {err.message}); "
                "showing the last event instead"
            )
            final = deployment_pb2.Deployment()
            final.CopyFrom(snapshot)
            final.state = terminal.state
            final.last_sequence = terminal.sequence
            final.status_message = terminal.message
            return final

    def _on_reconnect(self, deployment_id: str) -> ReconnectCallback:
        client = self._client

        def notice(err: SamiError | None, delay: float) -> None:
            # Diagnostics, not progress: stderr, so stdout keeps exactly one line per event.
            # Called before the client moves on: `address` is the one that failed.
            self._console.note(
                render.reconnect_line(
                    client.address, deployment_id, err, delay, client.next_address
                )
            )

        return notice

    def _annotation_stream(self) -> TextIO:
        return github_actions.command_stream(
            self._console.out, self._console.err, json_output=self._json
        )

    def _group(self, title: str) -> AbstractContextManager[None]:
        if not self._github:
            return nullcontext()
        return github_actions.group(self._annotation_stream(), title)


class _QueueWait:
    """What a wait knows about its deployment while it is QUEUED: when to look at the
    agents next, when to give up (--queue-timeout), and why it is still queued."""

    def __init__(self, started: float, queue_timeout: float | None, first: float, every: float):
        self.queued = True
        self.awaiting = False  # AWAITING_APPROVAL: the queue's clock has not started
        self.first = first
        self.timeout = queue_timeout
        self.next_check = started + first
        self.every = every
        self.deadline = None if not queue_timeout else started + queue_timeout
        self.why = "no agent has picked it up"
        # Set while the watch cannot reach sami-control: then that is why.
        self.unreachable = ""

    def seen(self, state: deployment_pb2.DeploymentState, now: float | None = None) -> None:
        if state == deployment_pb2.AWAITING_APPROVAL:
            # Waiting for a person, not an agent: --queue-timeout starts once approved.
            self.queued, self.awaiting = False, True
        elif state == deployment_pb2.QUEUED and self.awaiting:
            self.awaiting, self.queued = False, True
            self._restart(time.monotonic() if now is None else now)
        elif state != deployment_pb2.QUEUED:
            # Once an agent has it, a requeue (lost agent) is the lease machinery's business.
            self.queued = self.awaiting = False

    def _restart(self, now: float) -> None:
        self.next_check = now + self.first
        if self.timeout:
            self.deadline = now + self.timeout

    def wake_at(self) -> float | None:
        return _earliest(self.next_check, self.deadline) if self.queued else None

    def timed_out(self, now: float) -> bool:
        return self.queued and self.deadline is not None and now >= self.deadline

    def check_due(self, now: float) -> bool:
        if not self.queued or now < self.next_check:
            return False
        self.next_check = now + self.every
        return True


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def lock_target(lock: lock_pb2.Lock) -> str:
    if lock.service:
        return f"{lock.service} in {lock.environment}"
    return f"{lock.environment} (every service)"


def locked_reason(lock: lock_pb2.Lock) -> str:
    """Why a deployment to the target of `lock` waits, or is refused."""
    return f"{lock_target(lock)} is locked by {lock.holder}: {lock.reason}"


def queued_reason(
    deployment: deployment_pb2.Deployment, agents: list[cluster_pb2.Agent], now: float
) -> str:
    """Why `deployment` may still be QUEUED, from the agents of its cluster."""
    cluster = deployment.cluster
    connected = [a for a in agents if a.connected]
    if connected:
        names = ", ".join(a.agent_id for a in connected)
        return (
            f"agents of cluster {cluster} are connected ({names}) but none has taken it: an "
            f"earlier deployment of {render.what(deployment)} may still be running "
            f"(`sami list --service {deployment.service} --env {deployment.environment}`), "
            f"or no connected agent deploys type {deployment.deployment_type or '?'}"
        )
    if not agents:
        return (
            f"no agent of cluster {cluster} has ever connected: start sami-agent with a token "
            f"of cluster {cluster} (`sami agents --cluster {cluster}` lists them)"
        )
    seen = max(agents, key=_last_seen)
    at = _last_seen(seen)
    when = (
        f"agent {seen.agent_id} was last seen {_ago(now - at)} ago"
        if at
        else f"agent {seen.agent_id} left no trace of when"
    )
    return (
        f"no agent of cluster {cluster} is connected ({when}): start or check sami-agent "
        f"(`sami agents --cluster {cluster}`)"
    )


def _last_seen(agent: cluster_pb2.Agent) -> float:
    """When the control plane last heard from `agent` (epoch seconds, 0: never recorded)."""
    times = (agent.last_heartbeat_time, agent.connect_time)
    return max(t.seconds + t.nanos / 1e9 for t in times)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"
