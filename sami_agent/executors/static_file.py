"""The `static_file` executor: unpack a static-files archive and switch to it atomically.

Layout of `static_file.target_dir` (the web server serves `<target>/current`):

    <target>/releases/<hex>/             one unpacked release per artifact digest
    <target>/releases/<hex>.sami-release  its marker: written once the release is complete
    <target>/current -> releases/<hex>    a relative symbolic link, replaced atomically
    <target>/.sami-previous               the release that was current before the last switch
    <target>/.sami-lock                   serializes deployments to this target (flock)

One `execute()`:

1. **Plan**: the target is an absolute, normalized path; the digest is `sha256:<hex>`; the
   artifact ref is an http(s) URL (OCI images are refused: not supported yet).
2. **Lock** the target, remove leftovers of an interrupted run (`*.tmp-*`, `*.download-*`).
3. **Already current?** (a redelivery, or a redeploy of the running release): nothing to do.
4. **Kept release?** When `releases/<hex>` is complete (its marker names the digest), it is
   reused: a rollback to a kept release downloads nothing.
5. **Else fetch**: stream the URL to `releases/<hex>.download-*` (bounded size, progress),
   verify its sha256 against the artifact's digest, unpack it safely (see static_archive)
   into `releases/<hex>.tmp-*`, rename that to `releases/<hex>`, write the marker.
6. **Switch**: a new link beside `current`, `os.replace`d onto it; `.sami-previous` records
   the release switched away from.
7. **Prune**: keep `keep_releases` releases, most recently used first, never the current or
   the previous one.

Cancelled before the switch: CANCELLED, nothing switched (a complete release stays in
`releases/` for later). Cancelled or failing after the switch: `current` is switched back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sami_agent.executor import ExecutionResult, Job, Outcome, ProgressReporter
from sami_agent.executors.static_archive import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_UNPACKED_BYTES,
    DIGEST,
    ArchiveError,
    Cancelled,
    Deadline,
    Downloaded,
    Limits,
    display_url,
    download,
    human,
    unpack,
)

__all__ = ["StaticFileError", "StaticFileExecutor"]

DEFAULT_TIMEOUT = 300.0
RELEASES = "releases"
CURRENT = "current"
PREVIOUS_FILE = ".sami-previous"
LOCK_FILE = ".sami-lock"
MARKER_SUFFIX = ".sami-release"
_HEX = re.compile(r"[0-9a-f]{64}")
# Temporary files of an interrupted run, in releases/ and in the target.
_LEFTOVER_RELEASE = re.compile(r"[0-9a-f]{64}(\.sami-release)?\.(tmp|download)-")
_LEFTOVER_TARGET = re.compile(r"\.(current|sami-previous)\.tmp-")


class StaticFileError(Exception):
    """The job cannot be applied; the message says why."""


@dataclass(frozen=True)
class Plan:
    target: str
    url: str
    digest: str
    hex: str
    keep_releases: int

    @property
    def shown_url(self) -> str:
        return display_url(self.url)


def plan(job: Job) -> Plan:
    target = job.static_target_dir
    if not target:
        raise StaticFileError(
            "the assignment names no static_file.target_dir (is the control plane older than"
            " this agent?); nothing was changed"
        )
    if not os.path.isabs(target) or os.path.normpath(target) != target or target.count("/") < 2:
        raise StaticFileError(
            f"static_file.target_dir {target!r} must be an absolute, normalized path at least"
            " two levels deep (e.g. /srv/www/docs)"
        )
    match = DIGEST.fullmatch(job.artifact_digest)
    if match is None:
        raise StaticFileError(
            f"the artifact's digest {job.artifact_digest!r} is not sha256:<64 lower-case hex>"
        )
    ref = job.artifact_ref
    try:
        scheme = urllib.parse.urlsplit(ref).scheme.lower() if "://" in ref else ""
    except ValueError as exc:
        raise StaticFileError(f"the artifact ref is not a valid URL: {exc}") from exc
    if scheme not in ("http", "https"):
        if not scheme:
            raise StaticFileError(
                f"static_file artifacts published as OCI images ({ref or 'no ref'}) are not"
                " supported yet: publish the archive at an http(s) URL and register that URL"
                " as the artifact's ref"
            )
        raise StaticFileError(
            f"the artifact ref {display_url(ref)} is not an http(s) URL: publish the archive"
            " at an http(s) URL"
        )
    return Plan(target, ref, job.artifact_digest, match["hex"], max(1, job.keep_releases))


class StaticFileExecutor:
    """Executor for `static_file` deployments on the agent's own file system.

    Needs no engine. `max_archive_bytes` bounds the download, `max_unpacked_bytes` and
    `max_members` what it may unpack to; `io_timeout` is how long a stalled download is
    waited for; `download_attempts` retries network failures and HTTP 5xx.
    """

    capabilities: tuple[str, ...] = ("static_file",)

    def __init__(
        self,
        *,
        max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
        max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
        max_members: int = DEFAULT_MAX_MEMBERS,
        io_timeout: float = 30.0,
        progress_interval: float = 3.0,
        download_attempts: int = 3,
        retry_delay: float = 1.0,
    ) -> None:
        if min(max_archive_bytes, max_unpacked_bytes, max_members) <= 0:
            raise ValueError("archive limits must be positive")
        self.limits = Limits(max_archive_bytes, max_unpacked_bytes, max_members)
        self.io_timeout = io_timeout
        self.progress_interval = progress_interval
        self.download_attempts = max(1, download_attempts)
        self.retry_delay = retry_delay

    def execute(
        self, job: Job, report: ProgressReporter, cancelled: threading.Event
    ) -> ExecutionResult:
        if job.deployment_type not in self.capabilities:
            return ExecutionResult(
                Outcome.FAILED, f"the static_file executor does not deploy {job.deployment_type!r}"
            )
        try:
            the_plan = plan(job)
        except StaticFileError as exc:
            report("plan", f"refused: {exc}")
            return ExecutionResult(Outcome.FAILED, str(exc))
        timeout = job.converge_timeout if job.converge_timeout > 0 else DEFAULT_TIMEOUT
        deadline = Deadline(timeout, cancelled)
        try:
            return _Deployment(self, the_plan, report, deadline).run()
        except Cancelled as exc:
            return ExecutionResult(Outcome.CANCELLED, f"cancelled {exc}: nothing was switched")
        except (ArchiveError, StaticFileError) as exc:
            report("apply", f"failed: {exc}")
            return ExecutionResult(Outcome.FAILED, str(exc))
        except OSError as exc:
            reason = (
                f"static_file deployment to {the_plan.target} failed: {exc}; nothing was switched"
            )
            report("apply", reason)
            return ExecutionResult(Outcome.FAILED, reason)


@dataclass(frozen=True)
class _Current:
    link: str | None  # what `current` pointed at (None: there was no `current`)
    hex: str | None  # the release it pointed at, if it is one of ours


class _Deployment:
    def __init__(
        self,
        executor: StaticFileExecutor,
        plan: Plan,
        report: ProgressReporter,
        deadline: Deadline,
    ) -> None:
        self.executor = executor
        self.plan = plan
        self.report = report
        self.deadline = deadline
        self.target = plan.target
        self.releases = os.path.join(plan.target, RELEASES)
        self.current = os.path.join(plan.target, CURRENT)
        self.previous_file = os.path.join(plan.target, PREVIOUS_FILE)

    def release(self, hex_: str) -> str:
        return os.path.join(self.releases, hex_)

    def marker(self, hex_: str) -> str:
        return os.path.join(self.releases, hex_ + MARKER_SUFFIX)

    # -- the whole thing -------------------------------------------------------------------
    def run(self) -> ExecutionResult:
        plan = self.plan
        self.report(
            "plan",
            f"static_file: {plan.shown_url} ({plan.digest}) into {self.target}, keeping"
            f" {plan.keep_releases} release(s)",
        )
        self._refuse_link(self.releases, "releases")
        os.makedirs(self.releases, mode=0o755, exist_ok=True)
        with self._locked():
            self._remove_leftovers()
            current = self._read_current()
            if current.hex == plan.hex and os.path.isdir(self.release(plan.hex)):
                if not self._complete(plan.hex):
                    self._write_marker(plan.hex, members=None)  # serving it vouches for it
                self._touch(plan.hex)
                self.report(
                    "switch",
                    f"{self.current} already points at {RELEASES}/{plan.hex}: nothing to switch",
                )
                self._prune(plan.hex, self._read_previous())
                return ExecutionResult(
                    Outcome.SUCCEEDED,
                    f"{self.current} already pointed at {RELEASES}/{plan.hex} ({plan.digest})",
                )
            if self._complete(plan.hex):
                self.report(
                    "unpack",
                    f"release {plan.hex[:12]} is kept from an earlier deployment: switching to"
                    " it without downloading",
                )
            else:
                self._fetch()
            if self.deadline.cancelled.is_set():
                raise Cancelled(f"before the switch (release {plan.hex[:12]} stays unpacked)")
            return self._switch(current)

    # -- fetching --------------------------------------------------------------------------
    def _fetch(self) -> None:
        plan = self.plan
        fd, archive = tempfile.mkstemp(dir=self.releases, prefix=f"{plan.hex}.download-")
        os.close(fd)
        try:
            got = self._download(archive)
            if got.digest != plan.digest:
                raise StaticFileError(
                    f"the archive at {plan.shown_url} has digest {got.digest}, but the"
                    f" artifact's digest is {plan.digest}: refusing it; nothing was switched"
                )
            self.report("verify", f"sha256 verified: {plan.digest}")
            unpacking = tempfile.mkdtemp(dir=self.releases, prefix=f"{plan.hex}.tmp-")
            try:
                members = unpack(
                    archive, unpacking, limits=self.executor.limits, deadline=self.deadline
                )
                os.chmod(unpacking, 0o755)  # mkdtemp makes it 0700; the web server reads it
                if os.path.lexists(self.release(plan.hex)):  # incomplete: no marker
                    self._remove_release(plan.hex)
                os.rename(unpacking, self.release(plan.hex))
            except BaseException:
                shutil.rmtree(unpacking, ignore_errors=True)
                raise
            self._write_marker(plan.hex, members=members)
            self.report("unpack", f"unpacked {members} member(s) into {RELEASES}/{plan.hex}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(archive)

    def _download(self, archive: str) -> Downloaded:
        executor, plan = self.executor, self.plan
        for attempt in range(1, executor.download_attempts + 1):
            self.report("download", f"downloading {plan.shown_url}")
            try:
                got = download(
                    plan.url,
                    archive,
                    limits=executor.limits,
                    deadline=self.deadline,
                    report=lambda message: self.report("download", message),
                    io_timeout=executor.io_timeout,
                    progress_interval=executor.progress_interval,
                )
            except ArchiveError as exc:
                if not exc.retryable or attempt == executor.download_attempts:
                    raise
                delay = executor.retry_delay * attempt
                self.report("download", f"{exc}; trying again in {delay:g}s")
                if self.deadline.cancelled.wait(delay):
                    raise Cancelled(f"while downloading {plan.shown_url}") from exc
                continue
            self.report("download", f"downloaded {human(got.size)} in {got.seconds:.1f}s")
            return got
        raise AssertionError("unreachable")

    # -- switching -------------------------------------------------------------------------
    def _switch(self, before: _Current) -> ExecutionResult:
        plan = self.plan
        previous_record = self._read_previous()
        # A dangling `current` repaired in place keeps the previous release it had.
        previous = before.hex if before.hex != plan.hex else previous_record
        self._point_current(f"{RELEASES}/{plan.hex}")
        kept = f"; previous release {previous[:12]} kept for rollback" if previous else ""
        self.report("switch", f"switched {self.current} to {RELEASES}/{plan.hex}{kept}")
        try:
            self._fsync_dir(self.target)
            self._write_previous(previous)
            self._touch(plan.hex)
            if self.deadline.cancelled.is_set():
                back = self._switch_back(before, previous_record)
                return ExecutionResult(Outcome.CANCELLED, f"cancelled after the switch: {back}")
        except Exception as exc:
            back = self._switch_back(before, previous_record)
            return ExecutionResult(
                Outcome.FAILED, f"static_file deployment failed after the switch: {exc}; {back}"
            )
        self._prune(plan.hex, previous)
        return ExecutionResult(
            Outcome.SUCCEEDED, f"{self.current} -> {RELEASES}/{plan.hex} ({plan.digest}){kept}"
        )

    def _switch_back(self, before: _Current, previous_record: str | None) -> str:
        try:
            if before.link is None:
                os.unlink(self.current)
                said = f"removed {self.current} again (there was no release before)"
            else:
                self._point_current(before.link)
                said = f"switched {self.current} back to {before.link}"
            self._write_previous(previous_record)
            self._fsync_dir(self.target)
        except OSError as exc:
            said = f"could not switch {self.current} back to {before.link}: {exc}"
        self.report("rollback", said)
        return said

    def _point_current(self, link: str) -> None:
        """Make `current` a link to `link`, atomically: a new link beside, renamed onto it."""
        fresh = os.path.join(self.target, f".{CURRENT}.tmp-{secrets.token_hex(6)}")
        os.symlink(link, fresh)
        try:
            os.replace(fresh, self.current)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(fresh)
            raise

    def _read_current(self) -> _Current:
        if not os.path.lexists(self.current):
            return _Current(None, None)
        if not os.path.islink(self.current):
            raise StaticFileError(
                f"{self.current} exists and is not a symbolic link: move it away (Sami manages"
                f" it as a link to {RELEASES}/<digest>); nothing was changed"
            )
        link = os.readlink(self.current)
        name = os.path.normpath(os.path.join(self.target, link))
        parent, hex_ = os.path.split(name)
        return _Current(link, hex_ if parent == self.releases and _HEX.fullmatch(hex_) else None)

    def _read_previous(self) -> str | None:
        try:
            with open(self.previous_file, encoding="utf-8") as f:
                value = f.read().strip()
        except FileNotFoundError:
            return None
        return value if _HEX.fullmatch(value) else None

    def _write_previous(self, hex_: str | None) -> None:
        if hex_ is None or hex_ == self.plan.hex:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.previous_file)
            return
        self._write_atomically(self.previous_file, hex_ + "\n")

    # -- releases --------------------------------------------------------------------------
    def _complete(self, hex_: str) -> bool:
        if not os.path.isdir(self.release(hex_)) or os.path.islink(self.release(hex_)):
            return False
        try:
            with open(self.marker(hex_), encoding="utf-8") as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(marker, dict) and marker.get("digest") == f"sha256:{hex_}"

    def _write_marker(self, hex_: str, *, members: int | None) -> None:
        record = {
            "digest": f"sha256:{hex_}",
            "ref": display_url(self.plan.url) if hex_ == self.plan.hex else "",
            "unpacked_at": datetime.now(UTC).isoformat(),
            "members": members,
        }
        self._write_atomically(self.marker(hex_), json.dumps(record, sort_keys=True) + "\n")
        self._fsync_dir(self.releases)

    def _touch(self, hex_: str) -> None:
        """Mark a release as used now (pruning keeps the most recently used)."""
        os.utime(self.marker(hex_))

    def _last_used(self, hex_: str) -> float:
        try:
            return os.stat(self.marker(hex_)).st_mtime
        except OSError:
            return 0.0  # no marker: an incomplete release, the first to go

    def _prune(self, current: str, previous: str | None) -> None:
        try:
            names = os.listdir(self.releases)
            found = [
                name for name in names if _HEX.fullmatch(name) and os.path.isdir(self.release(name))
            ]
            keep = {current} | ({previous} if previous else set())
            removed: list[str] = []
            for name in sorted(found, key=self._last_used, reverse=True):
                if name in keep:
                    continue
                if len(keep) < self.plan.keep_releases:
                    keep.add(name)
                    continue
                self._remove_release(name)
                removed.append(name[:12])
            # Markers whose release is gone (removed by hand) are dropped too.
            for name in names:
                if name.endswith(MARKER_SUFFIX) and name[: -len(MARKER_SUFFIX)] not in found:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.releases, name))
        except OSError as exc:  # the deployment itself succeeded; say so, and move on
            self.report("prune", f"could not remove old releases: {exc}")
            return
        if removed:
            self.report(
                "prune",
                f"removed {len(removed)} old release(s) ({', '.join(removed)}); kept"
                f" {len(keep)} of at most {max(self.plan.keep_releases, len(keep))}",
            )

    def _remove_release(self, hex_: str) -> None:
        # The marker goes first: a half-removed release never looks complete.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.marker(hex_))
        shutil.rmtree(self.release(hex_))

    # -- housekeeping ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive flock on `<target>/.sami-lock` (other threads and processes of
        this host deploying to the same target wait)."""
        lock = os.path.join(self.target, LOCK_FILE)
        try:
            # O_NOFOLLOW: a link planted here would make the agent create or lock a file
            # elsewhere.
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._refuse_link(lock, "lock file")
            raise
        try:
            waiting = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting:
                        waiting = True
                        self.report(
                            "queue", f"waiting for another deployment to {self.target} to end"
                        )
                    self.deadline.check(f"while waiting for the lock on {self.target}")
                    self.deadline.cancelled.wait(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _refuse_link(self, path: str, what: str) -> None:
        """Sami writes releases and takes its lock inside the target only: a symbolic link
        in their place would make it write or remove files elsewhere."""
        if os.path.islink(path):
            raise StaticFileError(
                f"{path} is a symbolic link (to {os.readlink(path)!r}); Sami keeps its"
                f" {what} inside {self.target} and refuses to follow a link there: remove"
                " the link; nothing was changed"
            )

    def _remove_leftovers(self) -> None:
        """Temporary files of an interrupted run (we hold the lock: nobody else's)."""
        for folder, pattern in (
            (self.releases, _LEFTOVER_RELEASE),
            (self.target, _LEFTOVER_TARGET),
        ):
            for name in os.listdir(folder):
                if not pattern.match(name):
                    continue
                path = os.path.join(folder, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)

    def _write_atomically(self, path: str, text: str) -> None:
        fresh = f"{path}.tmp-{secrets.token_hex(6)}"
        try:
            with open(fresh, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(fresh, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(fresh)
            raise

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
