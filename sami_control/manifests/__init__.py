"""The deployments repo: layout, the sami.yaml schema (v1beta), lint and resolve.

Pure Python (PyYAML only, no grpc), shared by the `sami manifests lint` CLI and the control
plane, which re-validates every uploaded revision and resolves deployments against it:

    files = read_tree("deployments/")          # {repo-relative path: bytes}
    problems = lint(files)                     # [Problem(severity, file, line, message, hint)]
    manifest = resolve(files, "web", None, "stage")

See docs/manifests.md for the layout and every field.
"""

from .fs import read_tree
from .model import (
    DEFAULT_CONVERGE_TIMEOUT,
    DEPLOYMENT_TYPES,
    ENVIRONMENT_ALIASES,
    ENVIRONMENTS,
    MANIFEST_NAMES,
    UNSUPPORTED_TYPES,
    VERSION,
    CronSettings,
    ResolvedManifest,
    StaticFileSettings,
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
from .stacks import POLICY_OFF, POLICY_STRICT, STACK_POLICIES, stack_policy_problems
from .tree import ScanResult, check_revision, lint, repo_path_error, resolve, scan
from .values import is_valid_name, is_valid_stack_name

__all__ = [
    "DEFAULT_CONVERGE_TIMEOUT",
    "DEFAULT_LIMITS",
    "DEPLOYMENT_TYPES",
    "ENVIRONMENTS",
    "ENVIRONMENT_ALIASES",
    "MANIFEST_NAMES",
    "POLICY_OFF",
    "POLICY_STRICT",
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
