"""The deployments repo: layout, the sami.yaml schema (v1beta), lint and resolve.

Pure Python (PyYAML only, no grpc), shared by the `sami manifests lint` CLI and the control
plane, which re-validates every uploaded revision and resolves deployments against it:

    files = read_tree("deployments/")          # {repo-relative path: bytes}
    problems = lint(files)                     # [Problem(severity, file, line, message, hint)]
    manifest = resolve(files, "web", None, "stage")

See docs/manifests.md for the layout and every field.

It is also the one home of the vocabulary the client, the control plane and the agent share
(environments, deployment types, defaults: `model.py`). Those load at once; the validator
(`tree.py`, `values.py`: PyYAML and the cron grammar, about 3 MB) loads on first use, so an
agent or a `sami deploy` that only needs a constant does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .fs import read_tree
from .model import (
    APPROVAL_REQUIRED,
    APPROVER_ROLES,
    ARTIFACT_KIND_OF_TYPE,
    DEFAULT_APPROVAL_EXPIRES,
    DEFAULT_CONVERGE_TIMEOUT,
    DEFAULT_KEEP_RELEASES,
    DEPLOYMENT_TYPES,
    ENVIRONMENT_ALIASES,
    ENVIRONMENTS,
    MANIFEST_NAMES,
    MAX_KEEP_RELEASES,
    MAX_PROMOTE_AFTER,
    ON_DRIFT_REDEPLOY,
    ON_DRIFT_REPORT,
    ON_DRIFT_RULES,
    QUEUE_FIFO,
    QUEUE_RULES,
    QUEUE_SUPERSEDE,
    UNSUPPORTED_TYPES,
    VERSION,
    CronSettings,
    ResolvedManifest,
    StaticFileSettings,
    artifact_fits,
    canonical_environment,
    default_stack_name,
)
from .problems import (
    DEFAULT_LIMITS,
    AmbiguousDeploymentType,
    InvalidManifest,
    Limits,
    ManifestError,
    ManifestNotFound,
    NotSupported,
    Problem,
    RepoReadError,
    Severity,
    has_errors,
)

if TYPE_CHECKING:
    from .stacks import POLICY_OFF, POLICY_STRICT, STACK_POLICIES, stack_policy_problems
    from .tree import ScanResult, check_revision, lint, repo_path_error, resolve, scan
    from .values import is_valid_name, is_valid_stack_name

# Name → the module that defines it, imported on first use (see the docstring).
_LAZY = {
    "POLICY_OFF": "stacks",
    "POLICY_STRICT": "stacks",
    "STACK_POLICIES": "stacks",
    "stack_policy_problems": "stacks",
    "ScanResult": "tree",
    "check_revision": "tree",
    "lint": "tree",
    "repo_path_error": "tree",
    "resolve": "tree",
    "scan": "tree",
    "is_valid_name": "values",
    "is_valid_stack_name": "values",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup finds it without coming here
    return value


__all__ = [
    "APPROVAL_REQUIRED",
    "APPROVER_ROLES",
    "ARTIFACT_KIND_OF_TYPE",
    "DEFAULT_APPROVAL_EXPIRES",
    "DEFAULT_CONVERGE_TIMEOUT",
    "DEFAULT_KEEP_RELEASES",
    "DEFAULT_LIMITS",
    "DEPLOYMENT_TYPES",
    "ENVIRONMENTS",
    "ENVIRONMENT_ALIASES",
    "MANIFEST_NAMES",
    "MAX_KEEP_RELEASES",
    "MAX_PROMOTE_AFTER",
    "ON_DRIFT_REDEPLOY",
    "ON_DRIFT_REPORT",
    "ON_DRIFT_RULES",
    "POLICY_OFF",
    "POLICY_STRICT",
    "QUEUE_FIFO",
    "QUEUE_RULES",
    "QUEUE_SUPERSEDE",
    "STACK_POLICIES",
    "UNSUPPORTED_TYPES",
    "VERSION",
    "AmbiguousDeploymentType",
    "CronSettings",
    "InvalidManifest",
    "Limits",
    "ManifestError",
    "ManifestNotFound",
    "NotSupported",
    "Problem",
    "RepoReadError",
    "ResolvedManifest",
    "ScanResult",
    "Severity",
    "StaticFileSettings",
    "artifact_fits",
    "canonical_environment",
    "check_revision",
    "default_stack_name",
    "has_errors",
    "is_valid_name",
    "is_valid_stack_name",
    "lint",
    "read_tree",
    "repo_path_error",
    "resolve",
    "scan",
    "stack_policy_problems",
]
