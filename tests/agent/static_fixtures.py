"""What the static_file tests share: archives, a real HTTP server on 127.0.0.1 that serves
them (its fixtures are in conftest.py), a job for an archive, and running the executor."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

from sami_agent.executor import ExecutionResult, Job, Outcome
from sami_agent.executors.static_file import StaticFileExecutor

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
