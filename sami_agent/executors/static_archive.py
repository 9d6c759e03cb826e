"""Fetching and unpacking a static-files archive, without trusting it.

- `download()` streams an http(s) URL to a file, hashing as it goes, within a size bound,
  reporting progress and honouring cancellation and a deadline.
- `unpack()` checks every member of a tar archive (gzip, bzip2, xz or none) *before*
  anything is written: no absolute path, no `..`, no link pointing outside the release, no
  device, FIFO or other special file, nothing written through a link, a bounded number of
  members and unpacked bytes. The error names the member. It then extracts with the
  standard library's `data` filter (a second line of defence: ownership ignored, setuid and
  group/other write bits dropped) and finally checks, on disk, that every symbolic link
  resolves inside the release.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import re
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_MAX_ARCHIVE_BYTES = 1 << 30  # 1 GiB
DEFAULT_MAX_UNPACKED_BYTES = 4 << 30  # 4 GiB
DEFAULT_MAX_MEMBERS = 100_000
CHUNK = 1 << 20
# tarfile.FilterError exists from Python 3.11.4 on.
_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    error for error in (getattr(tarfile, "FilterError", None),) if error is not None
)

DIGEST = re.compile(r"sha256:(?P<hex>[0-9a-f]{64})")


class ArchiveError(Exception):
    """The archive cannot be deployed; the message says why (and names the member).

    `retryable`: a network failure or an HTTP 5xx, which trying again may cure.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Cancelled(Exception):
    """The job was cancelled while the archive was being fetched or unpacked."""


@dataclass(frozen=True)
class Limits:
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


@dataclass(frozen=True)
class Downloaded:
    digest: str  # sha256:<hex> of what was received
    size: int
    seconds: float


class Deadline:
    """A point in time after which fetching/unpacking gives up, and the cancel flag."""

    def __init__(self, seconds: float, cancelled: threading.Event) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.cancelled = cancelled

    def check(self, doing: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled(doing)
        if time.monotonic() > self.at:
            raise ArchiveError(
                f"timed out {doing}: the deployment's converge_timeout"
                f" ({self.seconds:g}s) ran out; nothing was switched"
            )

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class _Progress:
    """A line at each 10% step of a known size, else every `interval` seconds."""

    def __init__(self, report: Callable[[str], None], total: int | None, interval: float) -> None:
        self.report = report
        self.total = total
        self.interval = interval
        self.last_step = 0
        self.last_time = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.total:
            step = min(10, done * 10 // self.total)
            if step > self.last_step or now - self.last_time >= self.interval:
                self.last_step, self.last_time = step, now
                self.report(
                    f"downloaded {human(done)} of {human(self.total)} ({done * 100 // self.total}%)"
                )
        elif now - self.last_time >= self.interval:
            self.last_time = now
            self.report(f"downloaded {human(done)} (size not announced)")


def download(
    url: str,
    into: str,
    *,
    limits: Limits,
    deadline: Deadline,
    report: Callable[[str], None],
    io_timeout: float = 30.0,
    progress_interval: float = 3.0,
) -> Downloaded:
    """Stream `url` into the file `into` (created), returning what was received.

    Refuses more than `limits.max_archive_bytes`, announced or not. Raises ArchiveError
    (HTTP errors, network errors, the size bound, the deadline) or Cancelled.
    """
    shown = display_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ArchiveError(f"{shown} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": "sami-agent"})
    started = time.monotonic()
    deadline.check("before downloading")
    try:
        response = urllib.request.urlopen(
            request, timeout=max(1.0, min(io_timeout, deadline.remaining()))
        )
    except urllib.error.HTTPError as exc:
        raise ArchiveError(
            f"downloading {shown} failed: HTTP {exc.code} {exc.reason}", retryable=exc.code >= 500
        ) from exc
    except ValueError as exc:  # http.client.InvalidURL and the like
        raise ArchiveError(f"could not download {shown}: {exc}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ArchiveError(f"could not download {shown}: {reason}", retryable=True) from exc
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limits.max_archive_bytes:
            raise ArchiveError(
                f"the archive at {shown} is {human(total)}, more than the agent accepts"
                f" ({human(limits.max_archive_bytes)})"
            )
        progress = _Progress(report, total, progress_interval)
        sha = hashlib.sha256()
        done = 0
        with open(into, "wb") as out:
            while True:
                deadline.check(f"while downloading {shown}")
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise ArchiveError(
                        f"downloading {shown} failed after {human(done)}: {exc!r}", retryable=True
                    ) from exc
                if not chunk:
                    break
                done += len(chunk)
                if done > limits.max_archive_bytes:
                    raise ArchiveError(
                        f"the archive at {shown} is more than the agent accepts"
                        f" ({human(limits.max_archive_bytes)})"
                    )
                sha.update(chunk)
                out.write(chunk)
                progress.update(done)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done != total:
        raise ArchiveError(
            f"downloading {shown} ended after {human(done)} of {human(total)} announced",
            retryable=True,
        )
    return Downloaded("sha256:" + sha.hexdigest(), done, time.monotonic() - started)


# -- unpacking ----------------------------------------------------------------------------


NOTHING_DONE = "nothing was unpacked or switched"


def _unsafe(member: tarfile.TarInfo, why: str) -> ArchiveError:
    return ArchiveError(f"archive member {member.name!r} {why}; {NOTHING_DONE}")


def _path_parts(member: tarfile.TarInfo, path: str, what: str = "") -> list[str]:
    """The normalized components of a member path (or of `what`, a hard-link target)."""
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
        raise _unsafe(
            member, f"has an absolute {what} {path!r}" if what else "has an absolute path"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(
            member, f"has '..' in its {what} {path!r}" if what else "has a '..' component"
        )
    return parts


def check_members(tar: tarfile.TarFile, limits: Limits) -> list[tarfile.TarInfo]:
    """Every member of `tar`, each checked, before anything is written."""
    members: list[tarfile.TarInfo] = []
    kinds: dict[str, str] = {}  # normalized path -> dir | file | link
    unpacked = 0
    for member in tar:
        if len(members) >= limits.max_members:
            raise ArchiveError(
                f"the archive has more than {limits.max_members} members; {NOTHING_DONE}"
            )
        parts = _path_parts(member, member.name)
        if not parts and not member.isdir():
            raise _unsafe(member, "names the release directory itself but is not a directory")
        name = "/".join(parts)
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            if kinds.get(above, "dir") != "dir":
                raise _unsafe(member, f"lies under {above!r}, which is not a directory")
        if member.isdir():
            if kinds.get(name, "dir") != "dir":
                raise _unsafe(member, "replaces a file or link of the same name")
            kinds[name] = "dir"
        elif member.isreg():
            if kinds.get(name, "file") != "file":
                raise _unsafe(member, "replaces a directory or link of the same name")
            kinds[name] = "file"
            unpacked += member.size
            if unpacked > limits.max_unpacked_bytes:
                raise ArchiveError(
                    f"the archive unpacks to more than {human(limits.max_unpacked_bytes)}"
                    f" (at member {member.name!r}); {NOTHING_DONE}"
                )
        elif member.issym():
            if member.linkname.startswith("/"):
                raise _unsafe(
                    member, f"is a symbolic link to the absolute path {member.linkname!r}"
                )
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            if resolved == ".." or resolved.startswith("../"):
                raise _unsafe(
                    member, f"is a symbolic link pointing outside the release ({member.linkname!r})"
                )
            if name in kinds:
                raise _unsafe(member, "is a link replacing another member of the same name")
            kinds[name] = "link"
        elif member.islnk():
            target = "/".join(_path_parts(member, member.linkname, "hard link target"))
            if kinds.get(target) != "file":
                raise _unsafe(
                    member,
                    f"is a hard link to {member.linkname!r}, which is not a regular file"
                    " earlier in the archive",
                )
            if name in kinds:
                raise _unsafe(member, "is a link replacing another member of the same name")
            kinds[name] = "file"
        elif member.ischr() or member.isblk():
            raise _unsafe(member, "is a device file")
        elif member.isfifo():
            raise _unsafe(member, "is a FIFO")
        else:
            raise _unsafe(member, f"has an unsupported type {member.type!r}")
        members.append(member)
    return members


def unpack(archive: str, into: str, *, limits: Limits, deadline: Deadline) -> int:
    """Unpack the tar archive `archive` into the existing, empty directory `into`.

    Returns the number of members. Raises ArchiveError or Cancelled; the caller removes
    `into` then.
    """
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(
            f"the artifact is not a tar archive (gzip, bzip2, xz or uncompressed): {exc}"
        ) from exc
    with tar:
        try:
            members = check_members(tar, limits)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"the archive is damaged: {exc}") from exc
        deadline.check("while unpacking")

        data_filter = getattr(tarfile, "data_filter", None)  # Python 3.11.4+

        def paced() -> Iterator[tarfile.TarInfo]:
            for member in members:
                deadline.check("while unpacking")
                if data_filter is None:  # what the data filter would do, as far as it matters
                    member.mode &= 0o755
                    member.uid = member.gid = -1
                    member.uname = member.gname = ""
                yield member

        tar.errorlevel = 2  # every extraction problem is an error, not a debug message
        try:
            if data_filter is None:
                tar.extractall(into, members=paced())
            else:
                tar.extractall(into, members=paced(), filter=data_filter)
        except _FILTER_ERRORS as exc:  # our checks passed, yet the filter refused
            member = getattr(exc, "tarinfo", None)
            name = member.name if member is not None else "?"
            raise ArchiveError(
                f"archive member {name!r} was refused by the data filter: {exc};"
                " nothing was switched"
            ) from exc
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"unpacking the archive failed: {exc}") from exc
        except OSError as exc:
            raise ArchiveError(f"unpacking the archive failed: {exc}") from exc
    _check_links_on_disk(into)
    return len(members)


def _check_links_on_disk(root: str) -> None:
    """Every symbolic link under `root` resolves inside it (links through links included)."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(folder, entry)
            if not os.path.islink(path):
                continue
            resolved = os.path.realpath(path)
            if os.path.commonpath([resolved, real_root]) != real_root:
                relative = os.path.relpath(path, root)
                raise ArchiveError(
                    f"archive member {relative!r} is a symbolic link that resolves outside the"
                    f" release ({os.readlink(path)!r}); nothing was switched"
                )
