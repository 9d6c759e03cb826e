"""An executor that touches no engine and says what it would do.

It checks what it can without Docker (the stack files are there and parse, the image
services exist in them, the artifact is pinned by digest), then walks through the phases a
real deployment goes through, pausing `step_seconds` between steps so tests can kill or
cancel an agent mid-deployment. Each apply is appended to an optional ledger file, so fault
tests can count how often a deployment was really applied.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter


class DryRunError(Exception):
    """The job could not be applied for real either; the message says why."""


def pinned_image(ref: str, digest: str) -> str:
    """`<repo>@<digest>`: the artifact's repository with any tag or digest replaced by
    `digest` (or by the digest the ref already pins, when `digest` is empty)."""
    if not ref:
        raise DryRunError("the artifact has no ref, so there is no image to deploy")
    name, _, ref_digest = ref.partition("@")
    # A colon after the last slash starts a tag; one before it is a registry port.
    head, slash, last = name.rpartition("/")
    name = head + slash + last.partition(":")[0]
    if digest and ref_digest and digest != ref_digest:
        raise DryRunError(f"the artifact ref {ref} pins {ref_digest} but its digest is {digest}")
    digest = digest or ref_digest
    if not digest:
        raise DryRunError(f"the artifact ref {ref} is not pinned by digest and has no digest")
    return f"{name}@{digest}"


def compose_services(job: Job) -> list[str]:
    """The services defined by the job's stack files, checked like `docker stack deploy`
    would: every stack file is among the manifest files, parses, and has `services`."""
    import yaml  # here, not at the top: an idle dry-run agent does without it

    services: list[str] = []
    for path in job.stack_files:
        if path not in job.files:
            raise DryRunError(
                f"stack file {path} is not among the manifest files"
                f" ({', '.join(sorted(job.files)) or 'none'})"
            )
        try:
            document = yaml.safe_load(job.files[path])
        except yaml.YAMLError as exc:
            raise DryRunError(f"stack file {path} is not valid YAML: {exc}") from exc
        defined = document.get("services") if isinstance(document, dict) else None
        if not isinstance(defined, dict):
            raise DryRunError(f"stack file {path} has no `services` mapping")
        services.extend(str(name) for name in defined if str(name) not in services)
    missing = [name for name in job.image_services if name not in services]
    if job.stack_files and missing:
        raise DryRunError(
            f"image service(s) {', '.join(missing)} are not defined in"
            f" {', '.join(job.stack_files)} (they define: {', '.join(services) or 'nothing'})"
        )
    return services


class Ledger:
    """Append-only JSON lines, one per apply, durable before the apply is reported.

    One `os.write` per line on an O_APPEND descriptor, so several agent processes can share
    one ledger without interleaving their lines.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


class DryRunExecutor:
    capabilities: tuple[str, ...] = ("swarm", "compose", "static_file", "cron", "dry-run")

    def __init__(
        self,
        *,
        step_seconds: float = 0.3,
        ledger_path: str | os.PathLike[str] | None = None,
        agent_id: str = "",
    ) -> None:
        if step_seconds < 0:
            raise ValueError(f"step_seconds must be 0 or more, not {step_seconds}")
        self.step_seconds = step_seconds
        self.ledger = Ledger(ledger_path) if ledger_path is not None else None
        self.agent_id = agent_id

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        phase = "plan"
        if job.teardown:
            report("teardown", f"dry run: would remove stack {job.stack_name}")
            if cancelled.wait(self.step_seconds):
                return self._cancelled(job, report, "teardown", applied=False)
            return ExecutionResult(Outcome.SUCCEEDED, "dry run: nothing was removed")
        try:
            if cancelled.is_set():
                return self._cancelled(job, report, phase, applied=False)
            image = self._plan(job, report)
            if cancelled.wait(self.step_seconds):
                return self._cancelled(job, report, phase, applied=False)

            phase = "apply"
            self._apply(job, report)
            if cancelled.wait(self.step_seconds):
                return self._cancelled(job, report, phase, applied=True)

            phase = "converge"
            for target in self._converge_targets(job):
                report("converge", f"{target} 1/1 running {image} (dry run)")
                if cancelled.wait(self.step_seconds):
                    return self._cancelled(job, report, phase, applied=True)
        except DryRunError as exc:
            report(phase, f"dry run would fail: {exc}")
            return ExecutionResult(Outcome.FAILED, str(exc))
        return ExecutionResult(Outcome.SUCCEEDED, "dry run: nothing was changed")

    def _plan(self, job: Job, report: ProgressReporter) -> str:
        if job.deployment_type == "static_file":
            # A static-files artifact may be an archive URL rather than an image.
            image = job.artifact_ref
            report("plan", f"dry run: would unpack {image} ({job.artifact_digest}) atomically")
            return image
        image = pinned_image(job.artifact_ref, job.artifact_digest)
        services = compose_services(job)
        report(
            "plan",
            f"dry run: would deploy {image} to stack {job.stack_name}"
            f" ({job.deployment_type}, attempt {job.attempt})",
        )
        report(
            "plan",
            f"stack files: {_listed(job.stack_files)}; services: {_listed(services)};"
            f" image pinned on: {_listed(job.image_services)}",
        )
        return image

    def _apply(self, job: Job, report: ProgressReporter) -> None:
        if self.ledger is not None:
            self.ledger.append(
                {
                    "deployment_id": job.deployment_id,
                    "attempt": job.attempt,
                    "agent_id": self.agent_id,
                    "time": datetime.now(UTC).isoformat(),
                }
            )
        if job.deployment_type == "static_file":
            report("apply", "would unpack beside the current release, then switch to it")
            return
        files = " ".join(f"-c {path}" for path in job.stack_files)
        report(
            "apply",
            f"would run: docker stack deploy --with-registry-auth {files} {job.stack_name}".replace(
                "  ", " "
            ),
        )

    def _converge_targets(self, job: Job) -> Sequence[str]:
        return job.image_services or (job.stack_name or job.service,)

    def _cancelled(
        self, job: Job, report: ProgressReporter, phase: str, *, applied: bool
    ) -> ExecutionResult:
        if applied:
            report("rollback", f"would roll stack {job.stack_name} back to its previous spec")
        return ExecutionResult(
            Outcome.CANCELLED, f"cancelled during {phase} (dry run: nothing was changed)"
        )


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items) or "none"
