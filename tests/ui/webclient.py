"""A small HTTP client for the dashboard, as a browser would speak to it but with every
header in the test's hands (Origin, cookies, Last-Event-ID) and no redirect followed: the
security tests forge what a browser would not send."""

from __future__ import annotations

import http.client
import re
import ssl
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

COOKIE = "sami_session"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.body)
        assert m, "no CSRF field on the page"
        return m.group(1)

    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class WebClient:
    port: int
    # The client address (any of 127.0.0.0/8: one per simulated client).
    source: str = "127.0.0.1"
    cookies: dict[str, str] = field(default_factory=dict)
    # HTTPS, trusting this context's CA.
    tls: ssl.SSLContext | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20,
    ) -> Answer:
        conn = (
            http.client.HTTPSConnection(
                "127.0.0.1",
                self.port,
                timeout=timeout,
                source_address=(self.source, 0),
                context=self.tls,
            )
            if self.tls
            else http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=timeout, source_address=(self.source, 0)
            )
        )
        try:
            h = {"Host": f"127.0.0.1:{self.port}"}
            if self.cookies:
                h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if fields is not None:
                body = urlencode(fields)
                h["Content-Type"] = "application/x-www-form-urlencoded"
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            answer = Answer(resp.status, resp.headers, resp.read().decode(errors="replace"))
        finally:
            conn.close()
        for raw in answer.set_cookies():
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return answer

    def events(self, path: str, last_event_id: int | None = None) -> Iterator[tuple[str, str]]:
        """A live stream's (event, id) pairs as they arrive; closing the generator drops
        the connection, as a browser that lost it."""
        for kind, ident, _ in self.messages(path, last_event_id):
            yield kind, ident

    def messages(
        self, path: str, last_event_id: int | None = None
    ) -> Generator[tuple[str, str, str]]:
        """A live stream's (event, id, data) as they arrive, as `events`."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
            if last_event_id is not None:
                h["Last-Event-ID"] = str(last_event_id)
            conn.request("GET", path, headers=h)
            resp = conn.getresponse()
            assert resp.status == 200, resp.status
            kind = ident = data = ""
            while True:
                line = resp.readline().decode()
                if not line:
                    return
                if line.startswith("event: "):
                    kind = line[7:].strip()
                elif line.startswith("id: "):
                    ident = line[4:].strip()
                elif line.startswith("data: "):
                    data = line[6:].rstrip("\n")
                elif line == "\n" and kind:
                    yield kind, ident, data
                    kind = ident = data = ""
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, fields: dict[str, str], origin: str | None = "") -> Answer:
        """POST a form; `origin` "" sends this dashboard's own Origin, None none at all."""
        headers = {"Origin": origin or self.origin} if origin is not None else {}
        return self.request("POST", path, fields, headers)

    def sign_in(self, token: str) -> Answer:
        answer = self.post("/login", {"token": token, "next": "/"})
        assert answer.status == 303, answer.body[:500]
        return answer
