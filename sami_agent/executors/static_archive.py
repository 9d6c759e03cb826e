"""Fetching and unpacking a static-files archive, without trusting it.

- `download()` streams an http(s) URL to a file, hashing as it goes, within a size bound,
  reporting progress and honouring cancellation and a deadline.
- `unpack()` checks every member of a tar archive (gzip, bzip2, xz or none) *before*
  anything is written: no absolute path, no `..`, no link pointing outside the release, no
  device, FIFO or other special file, nothing written through a link, a bounded number of
  members and unpacked bytes. Reading the archive is bounded too: headers tarfile would
  read whole are refused from their announced size (`_CheckedTarInfo`), no read is larger
  than MAX_HEADER_BYTES, and every read looks at the deadline (`_PacedReader`), so a small
  archive that decompresses to gigabytes costs neither memory nor time past the deadline.
  The error names the member. It then extracts with the
  standard library's `data` filter (a second line of defence: ownership ignored, setuid and
  group/other write bits dropped) and finally checks, on disk, that every symbolic link
  resolves inside the release.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import http.client
import io
import lzma
import os
import posixpath
import re
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sami_common.limits import clean_text

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


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL, and never from https to http: the
    standard handler also follows one to ftp, and from https to plain http, where anyone on
    the path can swap the archive for another (the digest would catch it, but a redirect to
    ftp or a downgrade is never what a publisher meant)."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location)
            why = _refused_redirect(req.full_url, target)
            if why is not None:
                fp.close()
                raise ArchiveError(
                    f"{display_url(req.full_url)} redirects to"
                    f" {clean_text(display_url(target), 300)}: {why}; publish the archive"
                    " where it can be downloaded without that redirect"
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _refused_redirect(source: str, target: str) -> str | None:
    """Why a redirect from `source` to `target` is not followed, or None."""
    try:
        scheme = urllib.parse.urlsplit(target).scheme.lower()
    except ValueError:
        return "that is not a valid URL"
    if scheme not in ("http", "https"):
        return "the agent follows redirects to http(s) URLs only"
    if scheme == "http" and urllib.parse.urlsplit(source).scheme.lower() == "https":
        return "the agent does not follow a redirect from https to plain http"
    return None


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only: no file, ftp or data handler to reach, whatever a server answers."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _SafeRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _network_failure(exc: BaseException) -> str:
    """What went wrong, without the bytes a server sent: a reply that is not HTTP (an SSH
    banner, a database's greeting, binary noise) is described, never quoted."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(exc, http.client.BadStatusLine | http.client.UnknownProtocol):
        return "the server's reply is not HTTP"
    if isinstance(exc, http.client.LineTooLong):
        return "the server's reply has a line longer than HTTP allows"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the reply ended early ({len(exc.partial)} bytes read)"
    if isinstance(exc, http.client.HTTPException):
        return f"the server's reply is not valid HTTP ({type(exc).__name__})"
    if isinstance(exc, urllib.error.URLError):
        return clean_text(str(exc.reason), 300)
    return clean_text(str(exc), 300)


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
        response = _opener().open(request, timeout=max(1.0, min(io_timeout, deadline.remaining())))
    except urllib.error.HTTPError as exc:
        phrase = clean_text(str(exc.reason), 100)  # the server's words: bounded, cleaned
        raise ArchiveError(
            f"downloading {shown} failed: HTTP {exc.code} {phrase}", retryable=exc.code >= 500
        ) from exc
    except ValueError as exc:  # http.client.InvalidURL and the like
        raise ArchiveError(f"could not download {shown}: {clean_text(str(exc), 300)}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ArchiveError(
            f"could not download {shown}: {_network_failure(exc)}", retryable=True
        ) from exc
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
                    # read1: whatever has arrived, so a trickling server cannot hold one
                    # read (and the deadline check after it) for long.
                    chunk = response.read1(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise ArchiveError(
                        f"downloading {shown} failed after {human(done)}: {_network_failure(exc)}",
                        retryable=True,
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
# The largest pax extended header or GNU long name/link header read, and the most read from
# the archive at once. tarfile reads such a header whole before parsing it (a 1 GiB header
# once cost 1 GiB of memory), and parsing a header of n bytes can cost n² steps (a regular
# expression of Python < 3.11.10 backtracks over runs of digits: 0.25 s at 8 KiB, 17 s at
# 64 KiB), so it is refused from its announced size before anything of it is read. Enough
# for a path and a link target of MAX_PATH_BYTES each.
MAX_HEADER_BYTES = 8 << 10
# The longest member path or link target: the longest path Linux opens (PATH_MAX).
MAX_PATH_BYTES = 4096
# Extended header records per member (its own and the global ones it inherits); tarfile
# copies them into every member.
MAX_PAX_RECORDS = 64
# All names, link targets and extended header values of the archive, together: what the
# member list holds in memory besides the members themselves.
MAX_NAMES_BYTES = 32 << 20


def _unsafe(member: tarfile.TarInfo, why: str) -> ArchiveError:
    return ArchiveError(f"archive member {member.name!r} {why}; {NOTHING_DONE}")


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile's header parsing, refusing before it reads them what it would read whole:
    an oversized extended header, a sparse file's map (which can grow without bound)."""

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        _check_header_size(self, "pax extended")
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        _check_header_size(self, "GNU long name")
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]

    def _proc_sparse(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        raise _sparse(self)

    def _proc_gnusparse_00(self, next: tarfile.TarInfo, *args: object) -> None:
        raise _sparse(next)

    def _proc_gnusparse_01(self, next: tarfile.TarInfo, *args: object) -> None:
        raise _sparse(next)

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, *args: object) -> None:
        raise _sparse(next)


def _check_header_size(header: tarfile.TarInfo, kind: str) -> None:
    if header.size > MAX_HEADER_BYTES:
        raise ArchiveError(
            f"the archive has a {kind} header of {human(header.size)} (at byte"
            f" {header.offset}), more than the agent reads ({human(MAX_HEADER_BYTES)});"
            f" {NOTHING_DONE}"
        )


def _sparse(member: tarfile.TarInfo) -> ArchiveError:
    return _unsafe(member, "is a sparse file, which the agent does not unpack")


class _PacedReader:
    """The decompressed archive as tarfile reads it, under the deadline.

    Every read checks the deadline and reads at most MAX_HEADER_BYTES (tarfile reads
    headers whole: a larger read is a header that slipped past _CheckedTarInfo). A forward
    seek in a compressed stream decompresses everything skipped, so it is done here, by
    reads, rather than by the stream's own seek, which would not look at the clock.
    """

    def __init__(self, stream: io.BufferedIOBase, deadline: Deadline, *, compressed: bool) -> None:
        self._stream = stream
        self._deadline = deadline
        self._compressed = compressed
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_HEADER_BYTES:
            raise ArchiveError(
                f"reading the archive at byte {self._position} needs {human(max(size, 0))}"
                " in one piece, more than the agent reads at once"
                f" ({human(MAX_HEADER_BYTES)}); {NOTHING_DONE}"
            )
        self._deadline.check("while reading the archive")
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise OSError("the archive can only be read forward from a known offset")
        if not self._compressed:
            self._deadline.check("while reading the archive")
            self._position = self._stream.seek(offset)
            return self._position
        if offset < self._position:  # a compressed stream starts again from the beginning
            self._stream.seek(0)
            self._position = 0
        while self._position < offset:
            self._deadline.check("while reading the archive")
            skipped = len(self._stream.read(min(CHUNK, offset - self._position)))
            if not skipped:
                break  # past the end: the next read finds nothing, as tarfile expects
            self._position += skipped
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()


def _open_archive(archive: str) -> tuple[io.BufferedIOBase, bool]:
    """The archive's decompressed bytes (gzip, bzip2, xz or none, told by the magic
    number), and whether it was compressed."""
    with open(archive, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(archive, "rb"), True
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(archive, "rb"), True
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(archive, "rb"), True
    return open(archive, "rb"), False


def _path_parts(member: tarfile.TarInfo, path: str, what: str = "") -> list[str]:
    """The normalized components of a member path (or of `what`, a hard-link target)."""
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > MAX_PATH_BYTES:
        raise _unsafe(
            member,
            f"has a {what or 'path'} of {size} bytes, longer than a path can be"
            f" ({MAX_PATH_BYTES} bytes)",
        )
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


def _prefix_keys(parts: list[str]) -> list[int]:
    """A key for each leading part of a path (`a`, `a/b`, `a/b/c`), in time linear in the
    path's length: joining every prefix instead costs its square (40,000 components took
    5.4 s). Keys are hashes: a match is confirmed by comparing the paths themselves."""
    keys: list[int] = []
    key = 0
    for part in parts:
        key = hash((key, part))
        keys.append(key)
    return keys


def _names_size(member: tarfile.TarInfo) -> int:
    return (
        len(member.name)
        + len(member.linkname)
        + sum(len(key) + len(value) for key, value in member.pax_headers.items())
    )


class _Seen:
    """The members checked so far: what each path is, and which paths are no directory."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}  # normalized path -> dir | file | link
        self._not_dirs: dict[int, list[str]] = {}  # prefix key -> files and links

    def not_a_directory_above(self, parts: list[str], keys: list[int]) -> str | None:
        """The first leading path of `parts` that is a file or a link, if any."""
        for depth in range(1, len(parts)):
            candidates = self._not_dirs.get(keys[depth - 1])
            if candidates:
                above = "/".join(parts[:depth])
                if above in candidates:
                    return above
        return None

    def add(self, name: str, key: int | None, kind: str) -> None:
        if kind != "dir" and name not in self.kinds and key is not None:
            self._not_dirs.setdefault(key, []).append(name)
        self.kinds[name] = kind


def check_members(
    tar: tarfile.TarFile, limits: Limits, deadline: Deadline
) -> list[tarfile.TarInfo]:
    """Every member of `tar`, each checked, before anything is written."""
    members: list[tarfile.TarInfo] = []
    seen = _Seen()
    unpacked = 0
    names = 0
    for member in tar:
        deadline.check("while checking the archive")
        if len(members) >= limits.max_members:
            raise ArchiveError(
                f"the archive has more than {limits.max_members} members; {NOTHING_DONE}"
            )
        if len(member.pax_headers) > MAX_PAX_RECORDS:
            raise _unsafe(member, f"has more than {MAX_PAX_RECORDS} extended header records")
        names += _names_size(member)
        if names > MAX_NAMES_BYTES:
            raise ArchiveError(
                f"the archive's names and extended headers add up to more than"
                f" {human(MAX_NAMES_BYTES)} (at member {member.name[:200]!r}); {NOTHING_DONE}"
            )
        if member.sparse is not None:
            raise _sparse(member)
        _check_member(member, seen, limits)
        if member.isreg():
            unpacked += member.size
            if unpacked > limits.max_unpacked_bytes:
                raise ArchiveError(
                    f"the archive unpacks to more than {human(limits.max_unpacked_bytes)}"
                    f" (at member {member.name!r}); {NOTHING_DONE}"
                )
        members.append(member)
    return members


def _check_member(member: tarfile.TarInfo, seen: _Seen, limits: Limits) -> None:
    """Refuse `member` if unpacking it could write outside the release or through a link;
    else record it in `seen`."""
    parts = _path_parts(member, member.name)
    if not parts and not member.isdir():
        raise _unsafe(member, "names the release directory itself but is not a directory")
    keys = _prefix_keys(parts)
    above = seen.not_a_directory_above(parts, keys)
    if above is not None:
        raise _unsafe(member, f"lies under {above!r}, which is not a directory")
    name = "/".join(parts)
    key = keys[-1] if keys else None
    kinds = seen.kinds
    if member.isdir():
        if kinds.get(name, "dir") != "dir":
            raise _unsafe(member, "replaces a file or link of the same name")
        seen.add(name, key, "dir")
    elif member.isreg():
        if kinds.get(name, "file") != "file":
            raise _unsafe(member, "replaces a directory or link of the same name")
        seen.add(name, key, "file")
    elif member.issym():
        if len(member.linkname.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
            raise _unsafe(member, f"is a symbolic link longer than {MAX_PATH_BYTES} bytes")
        if member.linkname.startswith("/"):
            raise _unsafe(member, f"is a symbolic link to the absolute path {member.linkname!r}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if resolved == ".." or resolved.startswith("../"):
            raise _unsafe(
                member, f"is a symbolic link pointing outside the release ({member.linkname!r})"
            )
        if name in kinds:
            raise _unsafe(member, "is a link replacing another member of the same name")
        seen.add(name, key, "link")
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
        seen.add(name, key, "file")
    elif member.ischr() or member.isblk():
        raise _unsafe(member, "is a device file")
    elif member.isfifo():
        raise _unsafe(member, "is a FIFO")
    else:
        raise _unsafe(member, f"has an unsupported type {member.type!r}")


# What reading a damaged archive raises: tarfile's errors, a truncated stream, the
# decompressors' own errors.
_DAMAGED = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)


def unpack(archive: str, into: str, *, limits: Limits, deadline: Deadline) -> int:
    """Unpack the tar archive `archive` into the existing, empty directory `into`.

    Returns the number of members. Raises ArchiveError or Cancelled; the caller removes
    `into` then.
    """
    try:
        return _unpack(archive, into, limits=limits, deadline=deadline)
    except RecursionError as exc:
        # tarfile handles an extended header by recursing into the header after it.
        raise ArchiveError(
            f"the archive has thousands of extended headers in a row; {NOTHING_DONE}"
        ) from exc


def _unpack(archive: str, into: str, *, limits: Limits, deadline: Deadline) -> int:
    try:
        stream, compressed = _open_archive(archive)
    except OSError as exc:
        raise ArchiveError(f"could not read the archive: {exc}") from exc
    reader = _PacedReader(stream, deadline, compressed=compressed)
    try:
        tar = tarfile.TarFile(
            fileobj=reader,  # type: ignore[arg-type]
            mode="r",
            tarinfo=_CheckedTarInfo,
            copybufsize=MAX_HEADER_BYTES,
        )
    except _DAMAGED as exc:
        reader.close()
        raise ArchiveError(
            f"the artifact is not a tar archive (gzip, bzip2, xz or uncompressed): {exc}"
        ) from exc
    except BaseException:
        reader.close()
        raise
    with contextlib.closing(reader), tar:
        try:
            members = check_members(tar, limits, deadline)
        except _DAMAGED as exc:
            raise ArchiveError(f"the archive is damaged: {exc!r}"[:2000]) from exc
        deadline.check("while unpacking")
        _extract(tar, members, into, deadline)
    _check_links_on_disk(into, deadline)
    return len(members)


def _extract(
    tar: tarfile.TarFile, members: list[tarfile.TarInfo], into: str, deadline: Deadline
) -> None:
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
            f"archive member {name!r} was refused by the data filter: {exc}; nothing was switched"
        ) from exc
    except _DAMAGED as exc:
        raise ArchiveError(f"unpacking the archive failed: {exc}") from exc


def _check_links_on_disk(root: str, deadline: Deadline) -> None:
    """Every symbolic link under `root` resolves inside it (links through links included)."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        deadline.check("while checking the unpacked links")
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
