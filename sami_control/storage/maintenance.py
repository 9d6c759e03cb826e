"""Keeping the SQLite data folder safe: one server per folder, consistent backups while
serving, and restores that never leave a half-written database.

Backups use SQLite's online backup API from a connection of their own: it copies a
consistent snapshot while the server keeps writing (WAL lets readers and the writer run
side by side). A restore replaces the database only while no server holds the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
from pathlib import Path

DB_NAME = "sami.db"
LOCK_NAME = "sami.lock"


class DataDirBusy(Exception):
    """Another sami-control serves this data folder."""


class DataDirLock:
    """An exclusive lock on the data folder, held for as long as a server runs."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = data_dir / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise DataDirBusy(
                f"{data_dir} is in use by another sami-control (pid {holder}); stop it "
                "first, or give this one its own --data folder"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.close(self._fd)


def _check(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not a Sami database: {exc}") from None
    finally:
        conn.close()
    if result != "ok":
        raise ValueError(f"{path} fails its integrity check: {result}")
    if version == 0:
        raise ValueError(f"{path} is not a Sami database (no schema)")


def backup(data_dir: Path, dest: Path) -> int:
    """Copy the database of `data_dir` to `dest` (a file), consistently, while it may be
    serving. Returns the size of the copy. The copy is checked before it is kept."""
    source = data_dir / DB_NAME
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: is {data_dir} a Sami data folder?")
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".sami-backup-", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)  # one step: a single consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal
        finally:
            dst.close()
            src.close()
        _check(tmp)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest.stat().st_size


def restore(data_dir: Path, source: Path) -> Path | None:
    """Replace the database of `data_dir` with the backup `source`. Refused while a server
    holds the folder. The current database, when there is one, is kept beside as
    sami.db.before-restore: returns its path, or None when there was none to keep."""
    _check(source)
    lock = DataDirLock(data_dir)
    try:
        target = data_dir / DB_NAME
        fd, tmp_name = tempfile.mkstemp(prefix=".sami-restore-", dir=data_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            os.chmod(tmp, 0o600)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            kept: Path | None = None
            if target.exists():
                # Fold the old WAL into the old file before keeping it aside.
                old = sqlite3.connect(target)
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                old.close()
                kept = data_dir / f"{DB_NAME}.before-restore"
                os.replace(target, kept)
            for suffix in ("-wal", "-shm"):
                (data_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        lock.release()
    return kept
