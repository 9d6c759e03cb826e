"""Turning an Assignment into a Job, and running an executor off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from sami_agent.executor import Job, SecretPayload, SecretRef
from sami_agent.pb import agent_pb2, deployment_pb2
from sami_manifests import DEFAULT_KEEP_RELEASES

T = TypeVar("T")


class Duration(Protocol):
    """google.protobuf.Duration, structurally (its package ships no type stubs)."""

    seconds: int
    nanos: int


def seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def job_from_assignment(assignment: agent_pb2.Assignment) -> Job:
    deployment = assignment.deployment
    artifact = deployment.artifact
    manifest = assignment.manifest  # all defaults when the control plane sent none
    return Job(
        deployment_id=deployment.id,
        service=deployment.service,
        environment=deployment.environment,
        pull_request=deployment.pull_request,
        deployment_type=deployment.deployment_type,
        stack_name=deployment.stack_name,
        artifact_name=artifact.artifact_name,
        artifact_ref=artifact.ref,
        artifact_digest=artifact.digest,
        attempt=deployment.attempt,
        converge_timeout=float(manifest.converge_timeout_seconds),
        files=dict(assignment.files),
        stack_files=tuple(manifest.stack_files),
        image_services=tuple(manifest.image_services),
        static_target_dir=manifest.static_target_dir,
        # 0 means unset (proto3): the manifest's documented default applies.
        keep_releases=manifest.keep_releases
        if manifest.keep_releases > 0
        else DEFAULT_KEEP_RELEASES,
        action="teardown" if deployment.action == deployment_pb2.TEARDOWN else "deploy",
        cron_schedule=manifest.cron_schedule,
        secrets=tuple(SecretRef(s.name, s.version) for s in deployment.secrets),
        secret_payloads=tuple(
            SecretPayload(p.name, p.version, bytes(p.ciphertext)) for p in assignment.secrets
        ),
        variables=dict(deployment.variables),
    )


def slot_key(job: Job) -> str:
    """Jobs with the same key must not run at the same time on this agent: they touch the
    same stack. The control plane runs one deployment per service+environment, but after
    a revoke or a redelivery the previous run's thread may still be finishing here."""
    return f"{job.service}/{job.environment}/{job.pull_request}"


def run_in_daemon_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `fn` in a new daemon thread; the returned future resolves on the running loop.

    Not asyncio.to_thread: its pool threads are joined when the loop shuts down, so a
    SIGTERM would wait for a converge that may take many minutes. A daemon thread dies
    with the process; the lease then expires and the (idempotent) job is redelivered.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the awaiting coroutine, not swallowed
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(value))

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
