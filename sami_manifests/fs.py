"""Reading a deployments repo checkout into an in-memory revision."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .model import SERVICES_DIR
from .problems import DEFAULT_LIMITS, Limits, Problem, RepoReadError, error

# What a revision holds: the services/ tree and the root README. Other folders (conf/, CI
# workflows) are left alone: Sami neither reads nor uploads them.
ROOT_FILES = ("README.md",)
SKIPPED_DIRS = (".git",)


def read_tree(root: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Read `root` (a deployments repo checkout) into `{repo-relative posix path: bytes}`.

    Reads `services/` and `README.md`; skips `.git`. Symbolic links are followed only when
    they stay inside `root`. Raises RepoReadError, with every problem found, when a link
    points outside the repo or is broken, when an entry is not a regular file or folder,
    or when a limit (files, file size, total size) is exceeded.
    """
    base = Path(root)
    if not base.is_dir():
        raise RepoReadError(f"{root}: not a directory")
    real_root = base.resolve()
    reader = _Reader(real_root, limits)
    for name in ROOT_FILES:
        if os.path.lexists(base / name):
            reader.visit(base / name, name)
    services = base / SERVICES_DIR
    if os.path.lexists(services):
        reader.visit(services, SERVICES_DIR)
    if reader.problems:
        first = reader.problems[0]
        more = f" (and {len(reader.problems) - 1} more)" if len(reader.problems) > 1 else ""
        raise RepoReadError(f"{first.format()}{more}", reader.problems)
    return reader.files


class _Reader:
    def __init__(self, real_root: Path, limits: Limits) -> None:
        self.real_root = real_root
        self.limits = limits
        self.files: dict[str, bytes] = {}
        self.problems: list[Problem] = []
        self.total = 0
        self.stopped = False
        self.active_dirs: set[Path] = set()

    def fail(self, rel: str, code: str, message: str, hint: str) -> None:
        self.problems.append(error(rel, 0, code, message, hint))

    def visit(self, path: Path, rel: str) -> None:
        if self.stopped:
            return
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(self.real_root):
                self.fail(
                    rel,
                    "symlink-outside",
                    f"symbolic link to {os.readlink(path)} points outside the repo",
                    "copy the file into the repo instead of linking to it",
                )
                return
            if not target.exists():
                self.fail(rel, "broken-symlink", "broken symbolic link", "fix or remove it")
                return
        try:
            info = path.stat()
        except OSError as exc:
            self.fail(rel, "unreadable", f"cannot read: {exc.strerror}", "check permissions")
            return
        if stat.S_ISDIR(info.st_mode):
            self.visit_dir(path, rel)
        elif stat.S_ISREG(info.st_mode):
            self.read_file(path, rel, info.st_size)
        else:
            self.fail(rel, "not-a-file", "not a regular file or folder", "remove it from the repo")

    def visit_dir(self, path: Path, rel: str) -> None:
        real = path.resolve()
        if real in self.active_dirs:
            self.fail(rel, "symlink-loop", "symbolic link loop", "remove the link")
            return
        self.active_dirs.add(real)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            self.fail(rel, "unreadable", f"cannot list: {exc.strerror}", "check permissions")
            return
        try:
            for entry in entries:
                if entry.name in SKIPPED_DIRS:
                    continue
                self.visit(Path(entry.path), f"{rel}/{entry.name}")
        finally:
            self.active_dirs.discard(real)

    def read_file(self, path: Path, rel: str, size: int) -> None:
        limits = self.limits
        if len(self.files) >= limits.max_files:
            self.fail(
                rel,
                "too-many-files",
                f"more than {limits.max_files} files under services/",
                "keep only deployment manifests and the files they use",
            )
            self.stopped = True
            return
        if size > limits.max_file_bytes:
            self.fail(
                rel,
                "file-too-large",
                f"file is {size} bytes, more than the {limits.max_file_bytes} allowed",
                "keep large files out of the deployments repo",
            )
            return
        try:
            with path.open("rb") as handle:
                data = handle.read(limits.max_file_bytes + 1)
        except OSError as exc:
            self.fail(rel, "unreadable", f"cannot read: {exc.strerror}", "check permissions")
            return
        if len(data) > limits.max_file_bytes:
            self.fail(
                rel,
                "file-too-large",
                f"file is more than the {limits.max_file_bytes} bytes allowed",
                "keep large files out of the deployments repo",
            )
            return
        self.total += len(data)
        if self.total > limits.max_total_bytes:
            self.fail(
                rel,
                "revision-too-large",
                f"the files under services/ exceed {limits.max_total_bytes} bytes",
                "keep large files out of the deployments repo",
            )
            self.stopped = True
            return
        self.files[rel] = data
