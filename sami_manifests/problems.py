"""What validation reports: problems, the errors `resolve` raises, and the limits applied."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding about a deployments repo.

    `file` is the path relative to the repo root (posix separators); a folder ends with "/".
    `line` is 1-based, 0 when the problem is about a file or folder as a whole.
    `code` is a short stable identifier (e.g. "unknown-field") for programs and tests.
    """

    severity: Severity
    file: str
    line: int
    message: str
    hint: str
    code: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def location(self, root: str = "") -> str:
        path = f"{root.rstrip('/')}/{self.file}" if root else self.file
        return f"{path}:{self.line}" if self.line > 0 else path

    def format(self, root: str = "") -> str:
        """`file:line: severity: message — hint`, the form editors and CI logs understand."""
        text = f"{self.location(root)}: {self.severity.value}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "hint": self.hint,
            "code": self.code,
        }


def error(file: str, line: int, code: str, message: str, hint: str) -> Problem:
    return Problem(Severity.ERROR, file, line, message, hint, code)


def warning(file: str, line: int, code: str, message: str, hint: str) -> Problem:
    return Problem(Severity.WARNING, file, line, message, hint, code)


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.is_error for p in problems)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.severity != Severity.ERROR, p.code))


@dataclass(frozen=True)
class Limits:
    """Bounds on what is read and parsed; a revision that exceeds one is rejected."""

    # One YAML file (sami.yaml, a stack file).
    max_yaml_bytes: int = 256 * 1024
    max_yaml_depth: int = 64
    max_yaml_aliases: int = 200
    # Nodes of the document with every alias expanded: stops "billion laughs" before expansion.
    max_yaml_nodes: int = 250_000
    # The whole revision.
    max_files: int = 5_000
    max_file_bytes: int = 4 * 1024 * 1024
    # A revision is synced in one gRPC message (16 MiB at most): keep room for framing.
    max_total_bytes: int = 12 * 1024 * 1024
    max_path_length: int = 512
    # One environment folder travels to the agent in a single gRPC message (4 MiB by default).
    max_env_folder_bytes: int = 3 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class ManifestError(Exception):
    """Base of the errors raised by `resolve` and `read_tree`; carries the problems found."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems: tuple[Problem, ...] = tuple(problems)


class ManifestNotFound(ManifestError):
    """The revision has no manifest for the service/environment (the message names the folder
    to add)."""


class AmbiguousDeploymentType(ManifestError):
    """The service has the environment under several deployment types: the request must name
    one."""


class InvalidManifest(ManifestError):
    """The manifest exists but does not validate; `problems` lists the errors."""


class NotSupported(ManifestError):
    """The manifest is valid but asks for something Sami cannot do yet (type k8s)."""


class RepoReadError(ManifestError):
    """A directory could not be read into a revision (symlink escaping, limits exceeded)."""
