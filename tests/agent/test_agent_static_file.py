"""The static_file executor on the real file system, with archives served by a real HTTP
server on 127.0.0.1: deploy, switch, rollback to a kept release, pruning, verification,
hostile archives, cancellation and redelivery."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import http.server
import io
import os
import shutil
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_fakes import assignment

from sami_agent.executor import ExecutionResult, Job, Outcome
from sami_agent.executors import static_archive, static_file
from sami_agent.executors.static_file import StaticFileExecutor
from sami_agent.jobs import job_from_assignment

pytestmark = pytest.mark.timeout(30)


# -- archives and the server ---------------------------------------------------------------


def tar_gz(
    files: dict[str, bytes], extra: Callable[[tarfile.TarFile], None] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArchiveServer:
    """Serves `archives[path]` (HTTP/1.0: the end of the body is the end of the connection);
    counts requests per path; `fail[path]` holds statuses to answer first (e.g. [503])."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.requests: dict[str, int] = {}
        self.fail: dict[str, list[int]] = {}
        self.hide_length: set[str] = set()  # answered without Content-Length
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                pending = server.fail.get(self.path)
                if pending:
                    self.send_error(pending.pop(0))
                    return
                data = server.archives.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                if self.path not in server.hide_length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def publish(self, path: str, data: bytes) -> str:
        self.archives[path] = data
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    s = ArchiveServer()
    yield s
    s.close()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "www" / "site"


class Recorder:
    def __init__(self, on: Callable[[str, str], None] | None = None) -> None:
        self.reports: list[tuple[str, str]] = []
        self.on = on

    def __call__(self, phase: str, message: str) -> None:
        self.reports.append((phase, message))
        if self.on is not None:
            self.on(phase, message)

    def text(self) -> str:
        return "\n".join(f"{phase}: {message}" for phase, message in self.reports)


def a_job(target: Path, url: str, digest: str, **changes: object) -> Job:
    job = Job(
        deployment_id="d1",
        service="docs",
        environment="production",
        pull_request=0,
        deployment_type="static_file",
        stack_name="production_docs",
        artifact_name="docs",
        artifact_ref=url,
        artifact_digest=digest,
        attempt=1,
        converge_timeout=60.0,
        static_target_dir=str(target),
        keep_releases=5,
    )
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def run(
    job: Job,
    *,
    executor: StaticFileExecutor | None = None,
    cancelled: threading.Event | None = None,
    report: Recorder | None = None,
) -> tuple[ExecutionResult, Recorder]:
    report = report or Recorder()
    executor = executor or StaticFileExecutor(retry_delay=0)
    return executor.execute(job, report, cancelled or threading.Event()), report


def current_of(target: Path) -> str:
    return os.readlink(target / "current")


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


V1 = tar_gz({"index.html": b"<h1>v1</h1>", "css/site.css": b"body{}"})
V2 = tar_gz({"index.html": b"<h1>v2</h1>", "js/app.js": b"1"})
V3 = tar_gz({"index.html": b"<h1>v3</h1>"})
V4 = tar_gz({"index.html": b"<h1>v4</h1>"})


def deploy(server: ArchiveServer, target: Path, data: bytes, **changes: object) -> ExecutionResult:
    url = server.publish(f"/{hex_of(data)[:8]}.tar.gz", data)
    result, report = run(a_job(target, url, digest_of(data), **changes))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    return result


# -- deploy, switch, rollback --------------------------------------------------------------


def test_deploy_switch_and_rollback_without_downloading_again(
    server: ArchiveServer, target: Path
) -> None:
    url1 = server.publish("/v1.tar.gz", V1)
    url2 = server.publish("/v2.tar.gz", V2)

    result, report = run(a_job(target, url1, digest_of(V1)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert current_of(target) == f"releases/{hex_of(V1)}"  # relative: the folder can move
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"
    assert (target / "current" / "css" / "site.css").read_bytes() == b"body{}"
    assert stat.S_IMODE((target / "releases" / hex_of(V1)).stat().st_mode) == 0o755
    phases = [phase for phase, _ in report.reports]
    assert phases[0] == "plan"
    assert {"download", "verify", "unpack", "switch"} <= set(phases)
    assert digest_of(V1) in report.text()

    result, report = run(a_job(target, url2, digest_of(V2), deployment_id="d2"))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert current_of(target) == f"releases/{hex_of(V2)}"
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v2</h1>"
    assert (target / "releases" / hex_of(V1) / "index.html").exists()  # kept for rollback
    assert (target / ".sami-previous").read_text().strip() == hex_of(V1)
    assert "kept for rollback" in result.reason

    # Rollback: deploying v1 again switches to the kept release; nothing is downloaded.
    assert server.requests == {"/v1.tar.gz": 1, "/v2.tar.gz": 1}
    result, report = run(a_job(target, url1, digest_of(V1), deployment_id="d3"))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert server.requests == {"/v1.tar.gz": 1, "/v2.tar.gz": 1}
    assert "without downloading" in report.text()
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"
    assert (target / ".sami-previous").read_text().strip() == hex_of(V2)
    # Nothing temporary is left behind.
    assert entries(target) == {"releases", "current", ".sami-previous", ".sami-lock"}
    assert entries(target / "releases") == {
        hex_of(V1),
        hex_of(V1) + ".sami-release",
        hex_of(V2),
        hex_of(V2) + ".sami-release",
    }


def test_a_redelivered_job_is_recognised_and_downloads_nothing(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    job = a_job(target, url, digest_of(V1))
    assert run(job)[0].outcome is Outcome.SUCCEEDED
    result, report = run(dataclasses.replace(job, attempt=2))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert "already" in result.reason
    assert server.requests == {"/v1.tar.gz": 1}
    assert current_of(target) == f"releases/{hex_of(V1)}"


def test_keep_releases_prunes_the_least_recently_used_never_current_or_previous(
    server: ArchiveServer, target: Path
) -> None:
    for data in (V1, V2, V3):
        deploy(server, target, data, keep_releases=3)
    assert {hex_of(V1), hex_of(V2), hex_of(V3)} <= entries(target / "releases")
    deploy(server, target, V1, keep_releases=3)  # rollback: v1 is used again
    time.sleep(0.01)
    deploy(server, target, V4, keep_releases=3)
    # Most recently used: v4 (current), v1 (previous), v3; v2 goes with its marker.
    releases = entries(target / "releases")
    assert releases == {
        name + suffix
        for name in (hex_of(V4), hex_of(V1), hex_of(V3))
        for suffix in ("", ".sami-release")
    }

    # keep_releases 1 still keeps the previous release (for a switch back).
    deploy(server, target, V2, keep_releases=1)
    assert entries(target / "releases") == {
        name + suffix for name in (hex_of(V2), hex_of(V4)) for suffix in ("", ".sami-release")
    }


def test_a_digest_mismatch_fails_naming_both_digests_and_switches_nothing(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    claimed = digest_of(V3)
    result, _ = run(a_job(target, url, claimed))
    assert result.outcome is Outcome.FAILED
    assert claimed in result.reason and digest_of(V2) in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}


# -- hostile archives ----------------------------------------------------------------------


def _with(*members: tarfile.TarInfo) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        for info in members:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)

    return add


def _device(name: str) -> tarfile.TarInfo:
    info = member(name, tarfile.CHRTYPE)
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "absolute path": ("/tmp/sami-evil", _with(member("/tmp/sami-evil"))),
    "dot-dot": ("../x", _with(member("../x"))),
    "dot-dot inside": ("a/../../x", _with(member("a/../../x"))),
    "symlink to /etc": ("etc", _with(member("etc", tarfile.SYMTYPE, "/etc"))),
    "symlink out": ("up", _with(member("up", tarfile.SYMTYPE, "../../outside"))),
    "hardlink out": ("pw", _with(member("pw", tarfile.LNKTYPE, "/etc/passwd"))),
    "hardlink dot-dot": ("pw", _with(member("pw", tarfile.LNKTYPE, "../outside"))),
    "device file": ("null", _with(_device("null"))),
    "fifo": ("pipe", _with(member("pipe", tarfile.FIFOTYPE))),
    "through a symlink": (
        "link/x",
        _with(
            member("sub", tarfile.DIRTYPE), member("link", tarfile.SYMTYPE, "sub"), member("link/x")
        ),
    ),
    "symlink escaping through a later symlink": (
        "s2",
        _with(
            member("deep/er", tarfile.DIRTYPE),
            member("s2", tarfile.SYMTYPE, "deep/er/x/../../q"),
            member("deep/er/x", tarfile.SYMTYPE, "../.."),
        ),
    ),
    "symlink escaping through another symlink": (
        "s2",
        _with(
            member("deep/er", tarfile.DIRTYPE),
            member("deep/er/x", tarfile.SYMTYPE, "../.."),
            member("s2", tarfile.SYMTYPE, "deep/er/x/../../q"),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_naming_the_member(
    server: ArchiveServer, target: Path, tmp_path: Path, case: str
) -> None:
    deploy(server, target, V1)
    name, add = HOSTILE[case]
    data = tar_gz({"index.html": b"evil"}, add)
    url = server.publish("/evil.tar.gz", data)
    result, report = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.FAILED, report.text()
    assert repr(name) in result.reason, result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}
    assert entries(target) == {"releases", "current", ".sami-lock"}
    assert not (tmp_path / "srv" / "www" / "x").exists()
    assert not (tmp_path / "outside").exists()


def test_unpacked_files_lose_setuid_and_ownership_bits(server: ArchiveServer, target: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        info = member("bin/tool")
        info.mode = 0o4777
        info.size = 2
        tar.addfile(info, io.BytesIO(b"#!"))

    deploy(server, target, tar_gz({"index.html": b"x"}, add))
    mode = stat.S_IMODE((target / "current" / "bin" / "tool").stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH)


def test_archives_over_the_size_limit_are_refused(server: ArchiveServer, target: Path) -> None:
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_archive_bytes=10)
    )
    assert result.outcome is Outcome.FAILED
    assert "more than the agent accepts" in result.reason
    assert not (target / "current").exists()

    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_unpacked_bytes=5)
    )
    assert result.outcome is Outcome.FAILED
    assert "unpacks to more than" in result.reason
    assert entries(target / "releases") == set()


def test_the_size_limit_holds_when_no_size_is_announced(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    server.hide_length.add("/v1.tar.gz")
    result, _ = run(
        a_job(target, url, digest_of(V1)), executor=StaticFileExecutor(max_archive_bytes=10)
    )
    assert result.outcome is Outcome.FAILED
    assert "more than the agent accepts" in result.reason
    assert entries(target / "releases") == set()
    deploy(server, target, V1)  # and without a limit in the way, it deploys


def test_a_file_that_is_not_an_archive_is_refused(server: ArchiveServer, target: Path) -> None:
    data = b"<html>not an archive</html>"
    url = server.publish("/page.html", data)
    result, _ = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.FAILED
    assert "not a tar archive" in result.reason


# -- cancellation and failures -------------------------------------------------------------


def test_cancelled_before_it_starts_switches_nothing(server: ArchiveServer, target: Path) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()
    cancelled.set()
    result, _ = run(a_job(target, url, digest_of(V2)), cancelled=cancelled)
    assert result.outcome is Outcome.CANCELLED
    assert "nothing was switched" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert "/v2.tar.gz" not in server.requests


def test_cancelled_while_downloading_leaves_nothing_behind(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()

    def on(phase: str, message: str) -> None:
        if phase == "download" and message.startswith("downloaded "):
            cancelled.set()

    result, report = run(
        a_job(target, url, digest_of(V2)), cancelled=cancelled, report=Recorder(on)
    )
    assert result.outcome is Outcome.CANCELLED, report.text()
    assert "while downloading" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert entries(target / "releases") == {hex_of(V1), hex_of(V1) + ".sami-release"}


def test_cancelled_after_the_switch_switches_back(server: ArchiveServer, target: Path) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)
    cancelled = threading.Event()

    def on(phase: str, message: str) -> None:
        if phase == "switch":
            cancelled.set()

    result, report = run(
        a_job(target, url, digest_of(V2)), cancelled=cancelled, report=Recorder(on)
    )
    assert result.outcome is Outcome.CANCELLED, report.text()
    assert "switched" in result.reason and "back" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert "rollback" in [phase for phase, _ in report.reports]
    # The release stays unpacked: deploying it later downloads nothing.
    deploy(server, target, V2, deployment_id="d2")
    assert f"/{hex_of(V2)[:8]}.tar.gz" not in server.requests


def test_cancelled_after_the_first_switch_removes_current(
    server: ArchiveServer, target: Path
) -> None:
    url = server.publish("/v1.tar.gz", V1)
    cancelled = threading.Event()
    report = Recorder(lambda phase, _: cancelled.set() if phase == "switch" else None)
    result, _ = run(a_job(target, url, digest_of(V1)), cancelled=cancelled, report=report)
    assert result.outcome is Outcome.CANCELLED
    assert not os.path.lexists(target / "current")


def test_a_failure_after_the_switch_switches_back(
    server: ArchiveServer, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(server, target, V1)
    url = server.publish("/v2.tar.gz", V2)

    def broken(self: object, hex_: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(static_file._Deployment, "_touch", broken)
    result, _ = run(a_job(target, url, digest_of(V2)))
    assert result.outcome is Outcome.FAILED
    assert "No space left on device" in result.reason and "back" in result.reason
    assert current_of(target) == f"releases/{hex_of(V1)}"
    assert (target / ".sami-previous").exists() is False


def test_http_errors_fail_and_5xx_is_retried(server: ArchiveServer, target: Path) -> None:
    missing = server.publish("/missing.tar.gz", V1)
    del server.archives["/missing.tar.gz"]
    result, _ = run(a_job(target, missing, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert "HTTP 404" in result.reason
    assert server.requests["/missing.tar.gz"] == 1  # a 404 is not retried

    url = server.publish("/v1.tar.gz", V1)
    server.fail["/v1.tar.gz"] = [503]
    result, report = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert server.requests["/v1.tar.gz"] == 2
    assert "trying again" in report.text()


class Listener:
    """A TCP server on 127.0.0.1 that answers every connection with `reply` (no HTTP) and
    counts connections."""

    def __init__(self, reply: bytes = b"") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_a_redirect_to_another_scheme_is_not_followed(server: ArchiveServer, target: Path) -> None:
    ftp = Listener()
    try:
        for location in ("file:///etc/passwd", f"ftp://127.0.0.1:{ftp.port}/v1.tar.gz"):
            server.redirects["/moved.tar.gz"] = location
            url = server.publish("/moved.tar.gz", V1)
            result, report = run(a_job(target, url, digest_of(V1)))
            assert result.outcome is Outcome.FAILED, report.text()
            assert (
                f"redirects to {location}: the agent follows redirects to http(s) URLs only"
                in result.reason
            )
            assert "trying again" not in report.text()  # not retried: it cannot get better
        assert ftp.connections == 0
        assert not (target / "current").exists()
    finally:
        ftp.close()


def test_a_redirect_to_another_http_url_is_followed(server: ArchiveServer, target: Path) -> None:
    final = server.publish("/final.tar.gz", V1)
    server.redirects["/moved.tar.gz"] = final
    url = server.publish("/moved.tar.gz", V1)
    result, report = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    assert server.requests == {"/moved.tar.gz": 1, "/final.tar.gz": 1}


@pytest.mark.parametrize(
    ("source", "target", "refused"),
    [
        ("https://a.example/x", "http://a.example/x", "from https to plain http"),
        ("HTTPS://a.example/x", "HTTP://cdn.example/x", "from https to plain http"),
        ("https://a.example/x", "ftp://a.example/x", "http(s) URLs only"),
        ("http://a.example/x", "file:///etc/passwd", "http(s) URLs only"),
        ("https://a.example/x", "https://cdn.example/y", None),
        ("http://a.example/x", "https://a.example/x", None),
    ],
)
def test_which_redirects_are_followed(source: str, target: str, refused: str | None) -> None:
    why = static_archive._refused_redirect(source, target)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_a_reply_that_is_not_http_is_described_not_quoted(target: Path) -> None:
    garbage = Listener(b"SSH-2.0-OpenSSH_9.6 SECRET-BANNER\r\n\x00\x01\x1b[2Jbinary SECRET\n")
    try:
        url = f"http://127.0.0.1:{garbage.port}/v1.tar.gz"
        result, report = run(a_job(target, url, digest_of(V1)))
    finally:
        garbage.close()
    assert result.outcome is Outcome.FAILED
    assert "the server's reply is not HTTP" in result.reason, result.reason
    for text in (result.reason, report.text()):
        assert "SECRET" not in text and "SSH-2.0" not in text and "\x1b" not in text
    assert garbage.connections == 3  # a network failure: retried, then given up


def test_a_trickling_server_does_not_hold_the_download_past_the_deadline(target: Path) -> None:
    """One byte every 0.1 s never trips the socket timeout; a read waiting for a whole
    chunk ignored the deadline until the body was complete (here: 100 s)."""
    stop = threading.Event()
    sock = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1.tar.gz"
    started = time.monotonic()
    try:
        result, _ = run(a_job(target, url, digest_of(V1), converge_timeout=1.0))
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)
    assert result.outcome is Outcome.FAILED
    assert "timed out while downloading" in result.reason, result.reason
    assert time.monotonic() - started < 3.0


def test_progress_is_reported_with_bytes_and_total(server: ArchiveServer, target: Path) -> None:
    data = tar_gz({"big.bin": os.urandom(3 << 20)})  # incompressible: ~3 chunks
    url = server.publish("/big.tar.gz", data)
    result, report = run(a_job(target, url, digest_of(data)))
    assert result.outcome is Outcome.SUCCEEDED, report.text()
    progress = [m for p, m in report.reports if p == "download" and "%)" in m]
    assert len(progress) >= 3
    assert progress[-1].endswith("(100%)") and " of 3.0 MiB" in progress[-1]


def test_a_busy_target_is_waited_for(server: ArchiveServer, target: Path) -> None:
    target.mkdir(parents=True)
    url = server.publish("/v1.tar.gz", V1)
    fd = os.open(target / ".sami-lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    waiting = threading.Event()
    report = Recorder(lambda phase, _: waiting.set() if phase == "queue" else None)
    results: list[ExecutionResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run(a_job(target, url, digest_of(V1)), report=report)[0])
    )
    worker.start()
    try:
        assert waiting.wait(5)
        assert not (target / "current").exists()
    finally:
        os.close(fd)
    worker.join(5)
    assert results and results[0].outcome is Outcome.SUCCEEDED


def test_leftovers_of_an_interrupted_run_are_removed(server: ArchiveServer, target: Path) -> None:
    hex1 = hex_of(V1)
    (target / "releases" / f"{hex1}.tmp-abc" / "half").mkdir(parents=True)
    (target / "releases" / f"{hex1}.download-abc").write_bytes(b"par")
    (target / ".current.tmp-abc").symlink_to("releases/nothing")
    # A release directory without its marker is incomplete: unpacked again.
    (target / "releases" / hex1).mkdir()
    deploy(server, target, V1)
    assert entries(target / "releases") == {hex1, hex1 + ".sami-release"}
    assert entries(target) == {"releases", "current", ".sami-lock"}
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v1</h1>"


def test_a_current_that_is_no_link_is_left_alone(server: ArchiveServer, target: Path) -> None:
    (target / "current").mkdir(parents=True)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert "not a symbolic link" in result.reason
    assert server.requests == {}  # refused before downloading


def test_a_lock_file_that_is_a_link_is_refused_and_not_followed(
    server: ArchiveServer, target: Path, tmp_path: Path
) -> None:
    """Opening the lock followed links: a link planted there made the agent create (and
    lock) a file wherever it pointed."""
    target.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    (target / ".sami-lock").symlink_to(elsewhere)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert f"{target / '.sami-lock'} is a symbolic link" in result.reason
    assert not elsewhere.exists()
    assert not (target / "current").exists()
    assert server.requests == {}


@pytest.mark.parametrize("dangling", [False, True])
def test_a_releases_folder_that_is_a_link_is_refused(
    server: ArchiveServer, target: Path, tmp_path: Path, dangling: bool
) -> None:
    elsewhere = tmp_path / "elsewhere"
    if not dangling:
        elsewhere.mkdir()
    target.mkdir(parents=True)
    (target / "releases").symlink_to(elsewhere)
    url = server.publish("/v1.tar.gz", V1)
    result, _ = run(a_job(target, url, digest_of(V1)))
    assert result.outcome is Outcome.FAILED
    assert f"{target / 'releases'} is a symbolic link" in result.reason
    assert not elsewhere.exists() or list(elsewhere.iterdir()) == []
    assert entries(target) == {"releases"}
    assert server.requests == {}


# -- what is refused before anything happens -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"artifact_ref": "ghcr.io/example/docs@sha256:" + "ab" * 32},
            "not supported yet: publish the archive at an http(s) URL",
        ),
        ({"artifact_ref": "file:///etc/passwd"}, "is not an http(s) URL"),
        ({"static_target_dir": ""}, "names no static_file.target_dir"),
        ({"static_target_dir": "srv/www"}, "absolute, normalized"),
        ({"static_target_dir": "/srv"}, "two levels deep"),
        ({"static_target_dir": "/srv/www/../etc"}, "absolute, normalized"),
        ({"artifact_digest": "sha256:abc"}, "is not sha256:<64 lower-case hex>"),
        ({"deployment_type": "swarm"}, "does not deploy 'swarm'"),
    ],
)
def test_bad_jobs_are_refused_before_anything_is_touched(
    target: Path, changes: dict[str, object], reason: str
) -> None:
    job = a_job(target, "http://127.0.0.1:9/x.tar.gz", digest_of(V1), **changes)
    result, _ = run(job)
    assert result.outcome is Outcome.FAILED
    assert reason in result.reason
    assert not target.exists()


def test_the_assignment_carries_target_and_keep_releases() -> None:
    a = assignment(deployment_type="static_file")
    assert job_from_assignment(a).keep_releases == 5  # unset: the documented default
    assert job_from_assignment(a).static_target_dir == ""
    a.manifest.static_target_dir = "/srv/www/docs"
    a.manifest.keep_releases = 3
    job = job_from_assignment(a)
    assert (job.static_target_dir, job.keep_releases) == ("/srv/www/docs", 3)


def test_a_dangling_current_is_repaired_and_keeps_its_previous_release(
    server: ArchiveServer, target: Path
) -> None:
    deploy(server, target, V1)
    deploy(server, target, V2)
    (target / "releases" / (hex_of(V2) + ".sami-release")).unlink()
    shutil.rmtree(target / "releases" / hex_of(V2))  # removed by hand: `current` dangles
    deploy(server, target, V2)  # downloads again, since the release is gone
    assert server.requests[f"/{hex_of(V2)[:8]}.tar.gz"] == 2
    assert (target / "current" / "index.html").read_bytes() == b"<h1>v2</h1>"
    assert (target / ".sami-previous").read_text().strip() == hex_of(V1)
