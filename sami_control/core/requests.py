"""What callers ask for, already out of protobuf, not yet validated."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArtifactInput:
    artifact_name: str
    kind: int
    ref: str
    digest: str
    tags: list[str] = field(default_factory=list)
    git_repo: str = ""
    git_commit: str = ""
    ci_run_url: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentInput:
    service: str
    environment: str
    artifact: str
    pull_request: int = 0
    reason: str = ""
    request_id: str = ""
    deployment_type: str = ""

    def fingerprint(self) -> str:
        """Identifies the body of the request, to tell a retry from a reused request_id."""
        # The same JSON as ever (stored hashes must keep matching): every field but the key.
        body = {
            "artifact": self.artifact,
            "deployment_type": self.deployment_type,
            "environment": self.environment,
            "pull_request": self.pull_request,
            "reason": self.reason,
            "service": self.service,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
