"""Pull-request previews on Swarm: tearing a preview stack down, and listing the previews
the swarm runs (so the control plane can remove the ones whose pull request is gone).

Removal uses the reference implementation, `docker stack rm`, then waits until the stack's
services and networks are really gone: `stack rm` returns before Swarm has finished.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Mapping

import docker

from sami_agent.executor import ExecutionResult, Job, Outcome, PreviewStack, ProgressReporter
from sami_agent.executors.swarm_apply import (
    LABEL_DEPLOYMENT,
    STACK_NAMESPACE_LABEL,
    docker_cli_env,
)

PREVIEW_STACK = re.compile(r"pr-([1-9][0-9]{0,9})_([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)")
REMOVE_TIMEOUT = 120.0


def list_previews(client: docker.DockerClient) -> list[PreviewStack]:
    """Preview stacks that Sami deployed (their services carry the deployment label); a
    stack merely named like a preview is someone else's and is never reported."""
    found: dict[str, PreviewStack] = {}
    for service in client.services.list(filters={"label": LABEL_DEPLOYMENT}):
        labels = (service.attrs.get("Spec") or {}).get("Labels") or {}
        stack = labels.get(STACK_NAMESPACE_LABEL, "")
        m = PREVIEW_STACK.fullmatch(stack)
        if m and stack not in found:
            found[stack] = PreviewStack(
                stack, m.group(2), int(m.group(1)), labels.get(LABEL_DEPLOYMENT, "")
            )
    return sorted(found.values(), key=lambda p: p.stack_name)


def teardown(
    client: docker.DockerClient,
    job: Job,
    report: ProgressReporter,
    cancelled: threading.Event,
    docker_cli: str = "docker",
    env: Mapping[str, str] | None = None,
) -> ExecutionResult:
    stack = job.stack_name
    if not PREVIEW_STACK.fullmatch(stack):
        return ExecutionResult(
            Outcome.FAILED,
            f"refusing to remove {stack!r}: only preview stacks (pr-<N>_<service>) are torn down",
        )
    services = _stack_services(client, stack)
    if not services and not _stack_networks(client, stack):
        report("teardown", f"stack {stack} is not on this swarm: nothing to remove")
        return ExecutionResult(Outcome.SUCCEEDED, f"{stack} was already gone")
    if cancelled.is_set():
        return ExecutionResult(Outcome.CANCELLED, "cancelled before removing anything")
    report("teardown", f"docker stack rm {stack} ({len(services)} services)")
    try:
        proc = subprocess.run(
            [docker_cli, "stack", "rm", stack],
            env=docker_cli_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return ExecutionResult(Outcome.FAILED, f"docker stack rm {stack} failed: {exc}")
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        if not _only_networks_in_use(detail):
            return ExecutionResult(Outcome.FAILED, f"docker stack rm {stack} failed: {detail}")
        # `stack rm` removes the services, then their networks at once, while the tasks are
        # still shutting down (moby/moby#32620): the networks are removed below, once free.
        report("teardown", f"{stack}: networks still in use by stopping tasks; waiting")
    deadline = time.monotonic() + min(REMOVE_TIMEOUT, max(job.converge_timeout, 30.0))
    left = len(services)
    while time.monotonic() < deadline:
        services = _stack_services(client, stack)
        networks = _stack_networks(client, stack)
        if len(services) != left:
            left = len(services)
            report("teardown", f"{stack}: {left} services left")
        if not services and not networks:
            report("teardown", f"{stack} removed")
            return ExecutionResult(Outcome.SUCCEEDED, f"removed preview stack {stack}")
        if not services:
            _remove_networks(client, networks)
        time.sleep(0.5)
    return ExecutionResult(
        Outcome.FAILED,
        f"{stack} was not fully removed in time ({len(_stack_services(client, stack))} "
        "services left); `docker stack ps` on the manager shows why",
    )


# What `docker stack rm` prints for a network a stopping task still holds.
_NETWORK_IN_USE = re.compile(r"Failed to remove network \S+: .*? is in use by task")


def _only_networks_in_use(detail: str) -> bool:
    """Whether the only failures `docker stack rm` reported are networks still in use."""
    failures = [f for f in detail.split("Failed to remove") if f.strip()]
    rest = _NETWORK_IN_USE.sub("", detail)
    return bool(failures) and "Failed to remove" not in rest and "Error" not in rest


def _remove_networks(client: docker.DockerClient, names: list[str]) -> None:
    """Remove the stack's networks the tasks have let go of (the others: next time)."""
    for name in names:
        # Still in use, or gone meanwhile: the loop looks again.
        with contextlib.suppress(docker.errors.APIError):
            client.networks.get(name).remove()


def _stack_services(client: docker.DockerClient, stack: str) -> list[str]:
    services = client.services.list(filters={"label": f"{STACK_NAMESPACE_LABEL}={stack}"})
    return [s.name for s in services]


def _stack_networks(client: docker.DockerClient, stack: str) -> list[str]:
    networks = client.networks.list(filters={"label": f"{STACK_NAMESPACE_LABEL}={stack}"})
    return [n.name for n in networks]
