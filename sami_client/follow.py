"""Follow a deployment to its end for `sami deploy --wait` and `sami watch`: stream progress
lines live, resume across control-plane restarts, and turn the outcome into an exit status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TextIO

from sami_client import github_actions, render
from sami_client.client import TERMINAL_STATES, ReconnectCallback, SamiClient
from sami_client.errors import ExitCode, SamiError, WatchTimeout
from sami_client.pb import deployment_pb2

DEFAULT_WAIT_TIMEOUT = 30 * 60.0

# How long to keep trying to read the outcome after the terminal event arrived.
_OUTCOME_READ_TIMEOUT = 30.0


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
        self, deployment_id: str, timeout: float | None, *, write_outputs: bool = True
    ) -> int:
        """Print every event of the deployment until it ends; return the exit status.
        Raises SamiError when the wait cannot finish (rejected, unreachable, timed out).
        `write_outputs`: record the deployment in $GITHUB_OUTPUT as soon as it is known."""
        started = time.monotonic()
        seen: list[deployment_pb2.Deployment] = []
        try:
            snapshot, terminal = self._stream(deployment_id, timeout, write_outputs, seen)
        except WatchTimeout as err:
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
    ) -> tuple[deployment_pb2.Deployment, deployment_pb2.DeploymentEvent | None]:
        """Print the deployment's events until it ends; returns the deployment as the watch
        began and the terminal event, if the watch saw it. Appends each snapshot to `seen`,
        which the caller still has when the wait fails."""
        terminal: deployment_pb2.DeploymentEvent | None = None
        with self._group(f"sami: deployment {deployment_id}"):
            for item in self._client.watch(
                deployment_id, timeout=timeout, on_reconnect=self._on_reconnect(deployment_id)
            ):
                if isinstance(item, deployment_pb2.Deployment):
                    seen.append(item)
                    if write_outputs:
                        self.write_outputs(item)
                    if not self._json:
                        self._console.print(render.watch_header(item))
                    continue
                if item.state in TERMINAL_STATES:
                    terminal = item
                if self._json:
                    self._console.print(render.to_json({"event": render.to_dict(item)}))
                else:
                    self._console.print(render.event_line(item))
        assert seen, "a watch yields the deployment before anything else"
        return seen[-1], terminal

    def started(
        self, deployment: deployment_pb2.Deployment, *, wait: bool, timeout: float | None
    ) -> int:
        """What `sami deploy` (and rollback, promote, teardown) do with the deployment they
        just requested: with `wait`, follow it to its end (`timeout`: a `--timeout` value, see
        `wait_timeout`); without, say how to follow it and print its id, last on stdout for
        `id=$(sami deploy ... | tail -n1)`. Returns the exit status."""
        # Recorded before waiting, so a later step can find the deployment even if the wait fails.
        self.write_outputs(deployment)
        if wait:
            return self.follow(deployment.id, wait_timeout(timeout), write_outputs=False)
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
        addr = self._client.endpoint.addr

        def notice(err: SamiError | None, delay: float) -> None:
            # Diagnostics, not progress: stderr, so stdout keeps exactly one line per event.
            self._console.note(render.reconnect_line(addr, deployment_id, err, delay))

        return notice

    def _annotation_stream(self) -> TextIO:
        return github_actions.command_stream(
            self._console.out, self._console.err, json_output=self._json
        )

    def _group(self, title: str) -> AbstractContextManager[None]:
        if not self._github:
            return nullcontext()
        return github_actions.group(self._annotation_stream(), title)
