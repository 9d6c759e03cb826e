"""What callers ask for, already out of protobuf, not yet validated."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields


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
        body = {f: getattr(self, f) for f in _FINGERPRINTED}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# Every field of the request but its idempotency key (what dataclasses.asdict gave, without
# its deep copy): the JSON hashed stays the same, so stored fingerprints keep matching.
_FINGERPRINTED = tuple(f.name for f in fields(DeploymentInput) if f.name != "request_id")
