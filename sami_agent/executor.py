"""The one small interface between the agent's connection loop and the thing that deploys.

Executors are synchronous and run in a worker thread: the Docker SDK is blocking, and a
thread keeps a slow engine from stalling heartbeats on the agent's event loop. Everything an
executor needs arrives in a `Job`; it needs no git checkout and no database.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sami_manifests import DEFAULT_KEEP_RELEASES


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SecretRef:
    """A version of a secret (`sami secret set`) a deployment uses."""

    name: str
    version: int


@dataclass(frozen=True)
class SecretPayload:
    """One secret version as the assignment carries it: an age ciphertext only the cluster's
    keys open. Decrypted in memory at deploy time, never written anywhere by the agent."""

    name: str
    version: int
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class Job:
    deployment_id: str
    service: str
    environment: str
    pull_request: int
    deployment_type: str
    stack_name: str
    artifact_name: str
    artifact_ref: str
    artifact_digest: str
    attempt: int
    converge_timeout: float
    # Manifest files of the environment folder, by path relative to it.
    files: Mapping[str, bytes] = field(default_factory=dict)
    stack_files: tuple[str, ...] = ()
    image_services: tuple[str, ...] = ()
    # static_file: the directory releases are unpacked into (`<dir>/releases/<hex>`, served
    # through the `<dir>/current` link), and how many releases are kept, current included.
    static_target_dir: str = ""
    keep_releases: int = DEFAULT_KEEP_RELEASES
    # "deploy", or "teardown": remove the stack (pull-request previews).
    action: str = "deploy"
    # cron: the job's 5-field schedule (docs/cron.md).
    cron_schedule: str = ""
    # The secret versions the deployment uses, their ciphertexts, and the values of the
    # variables that fill `${NAME}` in the stack files (docs/swarm-executor.md, "Secrets,
    # configs and variables"). A plan has the versions but no ciphertexts.
    secrets: tuple[SecretRef, ...] = ()
    secret_payloads: tuple[SecretPayload, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def teardown(self) -> bool:
        return self.action == "teardown"


@dataclass(frozen=True)
class ExecutionResult:
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class PreviewStack:
    """A pull-request preview stack (`pr-<N>_<service>`) found on the swarm."""

    stack_name: str
    service: str
    pull_request: int
    deployment_id: str = ""


# report(phase, message): thread-safe; each call becomes one progress event.
ProgressReporter = Callable[[str, str], None]


class Executor(Protocol):
    """Applies one job and returns only when its outcome is known.

    Must be idempotent: a redelivered job that is already applied is recognised and
    watched, not applied again. When `cancelled` is set the executor stops, rolls back
    what it started, and returns Outcome.CANCELLED.
    """

    capabilities: tuple[str, ...]

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult: ...


@runtime_checkable
class PreviewLister(Protocol):
    """Executors that run previews list them, so the control plane can remove orphans."""

    def list_previews(self) -> list[PreviewStack]: ...


@dataclass(frozen=True)
class LiveService:
    """What one Sami service runs now (docs/status.md); equal values mean nothing changed."""

    service_id: str
    stack_name: str
    service: str
    deployment_id: str
    label_digest: str
    image: str
    desired_replicas: int
    running_replicas: int
    unhealthy_tasks: int
    update_state: str
    update_message: str
    change_time: float
    outside_change: str = ""


@runtime_checkable
class LiveStatusSource(Protocol):
    """Executors that can say what runs: read the Sami services (all, or those of
    `service_ids`: the ones missing from the answer are gone), and block delivering the
    ids of services Docker's event stream says changed until `stop` is set."""

    def live_services(self, service_ids: Collection[str] | None = None) -> list[LiveService]: ...

    def watch_changes(self, changed: Callable[[str], None], stop: threading.Event) -> None: ...


def live_status_source(executor: Executor) -> LiveStatusSource | None:
    """The executor itself if it reports live status, or the one it routes to that does."""
    if isinstance(executor, LiveStatusSource):
        return executor
    routed = getattr(executor, "live_status_source", None)
    return routed() if callable(routed) else None
