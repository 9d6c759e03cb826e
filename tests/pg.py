"""A private PostgreSQL cluster for the tests: `initdb` into a temporary folder, listening on
127.0.0.1 (a free port) and on a unix socket inside that folder, trust authentication for
one test role, fsync on (the storage tests are about durability). Stopped and removed
afterwards, by its own pg_ctl.

PostgreSQL refuses to run as root, and the tests run as root in CI and in the project's
sessions: the cluster then runs as an unprivileged system user (`sami-test`, created with
`useradd --system` when missing), through `runuser`. Debian's `postgresql` package provides
the binaries (scripts/install-engine.sh installs it); without them the tests that need a
cluster skip, except in CI, where they fail (tests/conftest.py).

Usable outside pytest too (bench/): `with PgCluster.started() as pg: pg.create_database(…)`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROLE = "sami_test"
SYSTEM_USER = "sami-test"


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and psql are: $SAMI_PG_BIN, else Debian's newest
    /usr/lib/postgresql/N/bin, else the PATH."""
    candidates = [os.environ.get("SAMI_PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    which = shutil.which("initdb")
    candidates.append(str(Path(which).parent) if which else "")
    for c in candidates:
        if c and all((Path(c) / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _system_user() -> str | None:
    """The user the cluster runs as: None (this one) unless this is root, then `sami-test`,
    created if missing (a system user: no home, no login shell)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


class PgCluster:
    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir = bindir
        self.root = root  # holds data/, the unix socket and the log
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.user = user
        self.host = "127.0.0.1"
        self.port = _free_port()

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[PgCluster]:
        bindir = find_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL's initdb, pg_ctl and psql are not installed")
        user = _system_user()
        # A short path: the unix socket lives in it (108-byte limit).
        root = Path(tempfile.mkdtemp(prefix="sami-pg-", dir="/tmp"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(bindir, root, user)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)

    def _as_user(self, *argv: str | Path) -> list[str]:
        cmd = [str(a) for a in argv]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _run(self, *argv: str | Path) -> str:
        done = subprocess.run(self._as_user(*argv), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(map(str, argv))} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
                + (f"\n{self.log.read_text()[-2000:]}" if self.log.exists() else "")
            )
        return done.stdout

    def start(self) -> None:
        # --no-sync: initdb's own files need not survive a crash of the test machine; the
        # server itself runs with fsync on.
        self._run(
            self.bindir / "initdb",
            "-D",
            self.data,
            "-U",
            ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{self.host}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "shared_buffers = 32MB\n"
                "max_connections = 100\n"
            )
        self.start_server()

    def start_server(self) -> None:
        """Start the (initialised) cluster's server; returns once it accepts connections."""
        self._pg_ctl("start")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server and leave it down (a database that is unreachable), until
        start_server(); `immediate` is a crash."""
        self._pg_ctl("stop", "-m", mode)

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", action, *extra)

    @property
    def pid(self) -> int:
        """The postmaster's pid (its first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def restart(self, mode: str = "immediate") -> None:
        """`pg_ctl restart -m MODE`: immediate is a crash (no checkpoint; recovery replays
        the WAL at start), every connection is cut."""
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._pg_ctl("stop", "-m", "fast")
        except RuntimeError:
            # pg_ctl could not stop it (it hung): end that postmaster, by its own pid.
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.pid, signal.SIGQUIT)

    def url(self, dbname: str) -> str:
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement as the test role (a superuser) through psql; its output, one
        row a line, columns separated by |."""
        done = subprocess.run(
            [
                self.bindir / "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                ROLE,
                "-d",
                dbname,
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_backends(self, dbname: str) -> int:
        """Cut every connection to `dbname` (pg_terminate_backend): what a proxy or a
        failover does to a client. The number cut."""
        out = self.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return int(out or 0)


@dataclass
class PgDatabase:
    """A database of its own for one test (the `pg_database` fixture)."""

    name: str
    url: str
    cluster: PgCluster

    def sql(self, statement: str) -> str:
        return self.cluster.sql(statement, self.name)

    def terminate_backends(self) -> int:
        return self.cluster.terminate_backends(self.name)
