"""The static_file executor's download, against real servers on 127.0.0.1: HTTP errors and
retries, which redirects are followed, replies that are not HTTP, and a trickling server
held to the deadline."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
from static_fixtures import (
    V1,
    ArchiveServer,
    a_job,
    digest_of,
    run,
)

from sami_agent.executor import Outcome
from sami_agent.executors import static_archive

pytestmark = pytest.mark.timeout(30)


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
