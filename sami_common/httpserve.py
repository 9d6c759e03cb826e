"""A small HTTP/1.1 server on asyncio streams, for the metrics and webhook endpoints.

It runs on the caller's event loop, so a handler may call into a core that is not
thread-safe. It is deliberately small: one request per connection (`Connection: close`), a
body only with `Content-Length` (no chunked uploads), and hard limits on everything a client
sends before a handler sees it: the request line, the header block, the number of headers,
the body (read only when the handler asks for it, so a handler can refuse a request from its
headers alone, as the gRPC server does) and the time taken to send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import structlog

from sami_common.listen import ListenError, split_listen

log = structlog.get_logger("sami.http")


@dataclass(frozen=True)
class Limits:
    request_line: int = 8 * 1024
    header_bytes: int = 16 * 1024
    headers: int = 100
    body: int = 64 * 1024
    # Seconds a client has to send its request line and headers (and then its body).
    read_timeout: float = 10.0
    # Connections served at once; more are answered 503 at once.
    connections: int = 64
    # After the answer, unread body bytes up to this are read and dropped before closing, so
    # the client reads the answer rather than a connection reset.
    drain: int = 1024 * 1024


class HttpError(Exception):
    """Raised by the server or a handler: answered with `status` and a JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: object, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(obj, ensure_ascii=True, sort_keys=True).encode() + b"\n"
        return cls(status, body, "application/json", dict(headers or {}))

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return cls.json(
            status, {"error": HTTPStatus(status).phrase, "message": message}, headers=headers
        )


class Request:
    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        peer: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
    ) -> None:
        self.method = method
        self.target = target
        parts = urlsplit(target)
        self.path = parts.path
        self.query_string = parts.query
        self.headers = headers  # lower-case names; repeated headers joined with ", "
        self.peer = peer  # like gRPC's: ipv4:127.0.0.1:53412
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._body: bytes | None = None

    @property
    def content_length(self) -> int:
        raw = self.headers.get("content-length", "0").strip() or "0"
        # isdigit() alone accepts "²", which int() then refuses.
        if not (raw.isascii() and raw.isdigit()):
            raise HttpError(400, "Content-Length is not a number")
        return int(raw)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def query(self) -> dict[str, list[str]]:
        try:
            return parse_qs(
                self.query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=50
            )
        except ValueError as exc:
            raise HttpError(400, f"bad query string: {exc}") from None

    async def body(self) -> bytes:
        """The request body, read now (at most `Limits.body` bytes: 413 beyond)."""
        if self._body is not None:
            return self._body
        if "transfer-encoding" in self.headers:
            raise HttpError(411, "send the body with a Content-Length (chunked is not accepted)")
        length = self.content_length
        if length > self._limits.body:
            raise HttpError(413, f"the body is limited to {self._limits.body} bytes")
        if length and self.headers.get("expect", "").lower() == "100-continue":
            self._writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._writer.drain()
        try:
            async with asyncio.timeout(self._limits.read_timeout):
                self._body = await self._reader.readexactly(length) if length else b""
        except (TimeoutError, asyncio.IncompleteReadError):
            raise HttpError(400, "the body was not sent in time, or was cut short") from None
        return self._body

    @property
    def body_read(self) -> bool:
        return self._body is not None


Handler = Callable[[Request], Awaitable[Response]]


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        host, port = info[0], info[1]
        if ":" in str(host):
            return f"ipv6:[{host}]:{port}"
        return f"ipv4:{host}:{port}"
    return ""


class HttpServer:
    """Serve `handler` on `listen` (HOST:PORT) until `stop()`."""

    def __init__(
        self,
        listen: str,
        handler: Handler,
        *,
        name: str,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.listen = listen
        self.host, self._port = split_listen(listen)
        self.name = name
        self.handler = handler
        self.limits = limits or Limits()
        self.ssl_context = ssl_context
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        try:
            self._server = await asyncio.start_server(
                self._connection,
                self.host,
                self._port,
                limit=max(self.limits.request_line, 1024) + 2,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.limits.read_timeout if self.ssl_context else None,
                reuse_address=True,
            )
        except OSError as exc:
            raise ListenError(
                f"could not listen on {self.listen} for {self.name}: {exc.strerror}"
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._tasks) >= self.limits.connections
        self._tasks.add(task)
        try:
            if busy:
                await self._write(writer, Response.error(503, "too many connections"), "GET")
                return
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        request: Request | None = None
        try:
            try:
                async with asyncio.timeout(self.limits.read_timeout):
                    method, target, headers = await self._read_head(reader)
            except TimeoutError:
                raise HttpError(408, "the request was not sent in time") from None
            request = Request(method, target, headers, _peer(writer), reader, writer, self.limits)
            try:
                response = await self.handler(request)
            except HttpError:
                raise
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("http_internal_error", server=self.name, incident=incident)
                response = Response.error(
                    500, f"internal error (incident {incident} in the sami-control log)"
                )
        except HttpError as exc:
            response = Response.error(exc.status, exc.message, exc.headers)
        await self._write(writer, response, method)
        if request is not None and not request.body_read:
            await self._drain(reader, request)

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise HttpError(414, "the request line is too long") from None
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "not an HTTP/1.x request line")
        method, target, _version = parts
        if not method.isalpha() or not method.isupper() or not target.startswith("/"):
            raise HttpError(400, "bad request line")
        headers: dict[str, str] = {}
        total = 0
        count = 0
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(431, "a request header is too long") from None
            total += len(raw)
            if total > self.limits.header_bytes:
                raise HttpError(431, f"request headers are limited to {self.limits.header_bytes}")
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                return method, target, headers
            count += 1
            if count > self.limits.headers:
                raise HttpError(431, f"at most {self.limits.headers} request headers")
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                raise HttpError(400, "malformed header line")
            key = name.lower()
            value = value.strip()
            if key in ("content-length", "transfer-encoding") and key in headers:
                raise HttpError(400, f"{name} given twice")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

    async def _write(self, writer: asyncio.StreamWriter, r: Response, method: str) -> None:
        reason = HTTPStatus(r.status).phrase if r.status in HTTPStatus._value2member_map_ else ""
        head = [
            f"HTTP/1.1 {r.status} {reason}",
            f"Content-Type: {r.content_type}",
            f"Content-Length: {len(r.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
        ]
        head += [f"{k}: {v}" for k, v in r.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(r.body)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)

    async def _drain(self, reader: asyncio.StreamReader, request: Request) -> None:
        """Read and drop an unread body (up to Limits.drain), so that closing the socket
        with unread data does not reset the connection before the client read the answer."""
        try:
            left = min(request.content_length, self.limits.drain)
        except HttpError:
            return
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            async with asyncio.timeout(2.0):
                while left > 0:
                    chunk = await reader.read(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
