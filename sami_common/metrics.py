"""Prometheus metrics shared by sami-control and sami-agent: a registry per process (never
prometheus_client's global one, so tests can run several servers in one process) and the
`/metrics` HTTP endpoint, served on the program's own event loop (sami_common.httpserve).

The endpoint has no authentication and no TLS. It exposes no secret (no token, no manifest,
no artifact reference): counts, durations and the names of environments, clusters, agents
and RPC methods. Keep it on loopback, or behind a firewall where those
names are not for everyone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sami_common.httpserve import Handler, HttpError, HttpServer, Limits, Request, Response

METRICS_PATH = "/metrics"
# Seconds: from a quick RPC to a long rollout.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)


def new_registry() -> CollectorRegistry:
    """A registry of its own, with the process (CPU, memory, file descriptors) and platform
    (Python version) collectors."""
    registry = CollectorRegistry(auto_describe=True)
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    return registry


def metrics_handler(
    registry: CollectorRegistry, before_scrape: Callable[[], Awaitable[None]] | None = None
) -> Handler:
    """`before_scrape`, if given, is awaited before each scrape: a collector that reads
    something asynchronously (the control plane's store) reads it there, since a
    collector's collect() cannot await."""

    async def handle(req: Request) -> Response:
        if req.path not in (METRICS_PATH, "/"):
            raise HttpError(404, f"not found: metrics are at {METRICS_PATH}")
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "use GET", {"Allow": "GET, HEAD"})
        if req.path == "/":
            return Response(200, b"Sami metrics: GET /metrics\n")
        if before_scrape is not None:
            await before_scrape()
        # Collectors run here, on the server's event loop: those that read the control
        # plane's state need no locks.
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return handle


def metrics_server(
    listen: str,
    registry: CollectorRegistry,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> HttpServer:
    return HttpServer(
        listen,
        metrics_handler(registry, before_scrape),
        name="metrics",
        limits=Limits(body=0, connections=16),
    )
