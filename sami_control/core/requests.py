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
    # A rollback to this deployment (an id).
    rollback_of: str = ""
    # Deploy even if the artifact's digest is quarantined on the target (audited).
    force: bool = False

    def fingerprint(self) -> str:
        """Identifies the body of the request, to tell a retry from a reused request_id."""
        body = {f: getattr(self, f) for f in _FINGERPRINTED}
        for f in _ADDED_LATER:
            value = getattr(self, f)
            if value:
                body[f] = value
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# Fields added after fingerprints were first stored: hashed only when set, so a request
# without them hashes as before and stored fingerprints keep matching its retries.
_ADDED_LATER = ("rollback_of", "force")
# Every other field of the request but its idempotency key (what dataclasses.asdict gave,
# without its deep copy): the JSON hashed stays the same.
_FINGERPRINTED = tuple(
    f.name for f in fields(DeploymentInput) if f.name not in ("request_id", *_ADDED_LATER)
)
