"""The optional HTTP endpoints of sami-control, next to the gRPC port: Prometheus metrics
(`--metrics-listen`) and the webhook (`--webhook-listen`). Both run on the control plane's
event loop (sami_common.httpserve)."""

from __future__ import annotations

from pathlib import Path

import structlog

from sami_common.httpserve import HttpServer
from sami_common.listen import ListenError, is_loopback
from sami_common.metrics import metrics_server
from sami_control.core.controlplane import ControlPlane
from sami_control.metrics import ControlMetrics
from sami_control.webhook import ssl_context, webhook_server

log = structlog.get_logger("sami.control")


class HttpEndpoints:
    def __init__(
        self,
        core: ControlPlane,
        metrics: ControlMetrics,
        *,
        metrics_listen: str = "",
        webhook_listen: str = "",
        insecure: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        client_ca: Path | None = None,
    ) -> None:
        """Raises ListenError for an address it must not or cannot use."""
        self.metrics: HttpServer | None = None
        self.webhook: HttpServer | None = None
        if metrics_listen:
            self.metrics = metrics_server(metrics_listen, metrics.registry, metrics.before_scrape)
            if not is_loopback(metrics_listen):
                log.warning(
                    "metrics_not_on_loopback",
                    listen=metrics_listen,
                    note="anyone who reaches it can read it: no secrets, but the names of "
                    "environments, clusters and agents, and counts",
                )
        if webhook_listen:
            tls = None
            if tls_cert is not None:
                # ControlServer refuses --tls-cert without --tls-key before it gets here.
                assert tls_key is not None
                try:
                    tls = ssl_context(tls_cert, tls_key, client_ca)
                except (OSError, ValueError) as exc:
                    raise ListenError(f"the webhook cannot use the TLS files: {exc}") from None
            elif not is_loopback(webhook_listen) and not insecure:
                raise ListenError(
                    f"refusing to serve the webhook on {webhook_listen} without TLS: tokens "
                    "would cross the network in clear. Listen on 127.0.0.1, pass --tls-cert "
                    "and --tls-key (the webhook then serves HTTPS), or pass --insecure if a "
                    "trusted proxy terminates TLS in front of it"
                )
            self.webhook = webhook_server(webhook_listen, core, metrics, tls)

    @property
    def metrics_port(self) -> int:
        return self.metrics.port if self.metrics else 0

    @property
    def webhook_port(self) -> int:
        return self.webhook.port if self.webhook else 0

    async def start(self) -> None:
        started: list[HttpServer] = []
        try:
            for server in (self.metrics, self.webhook):
                if server is not None:
                    await server.start()
                    started.append(server)
        except BaseException:
            for server in started:
                await server.stop()
            raise

    async def stop(self) -> None:
        for server in (self.webhook, self.metrics):
            if server is not None:
                await server.stop()
