"""The dashboard's HTTP server: an aiohttp application on the control plane's own event
loop (AppRunner + TCPSite, no server of its own), the routes, and the listening rules of
every Sami port (TLS off loopback, or --insecure)."""

from __future__ import annotations

import ssl
from pathlib import Path

import structlog
from aiohttp import web

from sami_common.listen import ListenError, require_tls_off_loopback, split_listen
from sami_control.core.controlplane import ControlPlane
from sami_control.web import actions, live, pages
from sami_control.web.data import Data
from sami_control.web.guard import WEB, Web, errors, security_headers
from sami_control.web.sessions import LoginLimiter, Sessions

log = structlog.get_logger("sami.control")

STATIC = Path(__file__).parent / "static"
# The largest request body: a form with a reason and a token is well under it.
MAX_BODY = 64 * 1024


def build_app(core: ControlPlane, *, tls: bool) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[WEB] = Web(Data(core), Sessions(), LoginLimiter(), tls)
    app.on_response_prepare.append(security_headers)
    r = app.router
    r.add_get("/", pages.overview)
    r.add_get("/login", actions.login_form)
    r.add_post("/login", actions.login)
    r.add_post("/logout", actions.logout)
    r.add_get("/deployments/{id}", pages.deployment)
    r.add_get("/deployments/{id}/events", live.events)
    r.add_get("/deployments/{id}/cancel", actions.confirm_cancel)
    r.add_post("/deployments/{id}/cancel", actions.cancel)
    r.add_get("/deployments/{id}/rollback", actions.confirm_rollback)
    r.add_post("/deployments/{id}/rollback", actions.rollback)
    r.add_get("/services/{service}/{environment}", pages.history)
    r.add_get("/status", pages.status)
    r.add_get("/status/events", live.status_events)
    r.add_get("/agents", pages.agents)
    r.add_get("/audit", pages.audit)
    r.add_static("/static/", STATIC, append_version=False)
    return app


class WebServer:
    """`--ui-listen`: started and stopped with the gRPC server."""

    def __init__(
        self,
        core: ControlPlane,
        listen: str,
        *,
        insecure: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Raises ListenError for an address it must not or cannot use."""
        self.host, port = split_listen(listen)
        self._port = port
        require_tls_off_loopback(
            listen,
            tls=tls is not None,
            insecure=insecure,
            serving="serve the dashboard",
            secrets="tokens and session cookies",
        )
        self.listen = listen
        self.tls = tls
        self.app = build_app(core, tls=tls is not None)
        # A handler whose browser went away is cancelled: a live stream then releases its
        # watch (one of the token's --max-streams-per-token) at once.
        # Open live streams get a second to end when the server stops.
        self.runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self._port, ssl_context=self.tls)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise ListenError(f"the dashboard cannot listen on {self.listen}: {exc}") from None
        self.port = int(self.runner.addresses[0][1])
        log.info("dashboard_serving", listen=self.listen, port=self.port, tls=self.tls is not None)

    async def stop(self) -> None:
        await self.runner.cleanup()
