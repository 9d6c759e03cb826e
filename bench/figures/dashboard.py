"""Figure 9, the dashboard: how fast the overview of 200 services reaches the screen. The
control plane serves `--ui-listen`; each service has deployments in two environments
(the newest queued, so that each cell reads both the newest deployment and what runs:
the overview's dearest case). Measured: the server's answer to GET / (a signed-in
session, time to the last byte) and, in headless chromium, the first contentful paint
of the page (from navigation start, so it includes the server's answer)."""

from __future__ import annotations

import http.client
import re
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc

from bench.common import Row, Skipped, free_port, percentile
from bench.control import ControlPlane, bearer, deployments_repo, service_names
from bench.figures.shared import Ctx, ms, ratio_of
from sami_control.web.data import OVERVIEW_PAGE
from tests.browser import CHROMIUM, CHROMIUM_ARGS

ENVIRONMENTS = ("stage", "production")
# The page's first contentful paint, in ms from navigation start (waiting for it to be
# reported if the load event came first).
_FCP = """() => new Promise((resolve) => {
  const seen = performance.getEntriesByName("first-contentful-paint")[0];
  if (seen) { resolve(seen.startTime); return; }
  new PerformanceObserver((list) => {
    const e = list.getEntriesByName("first-contentful-paint")[0];
    if (e) { resolve(e.startTime); }
  }).observe({ type: "paint", buffered: true });
  setTimeout(() => resolve(null), 5000);
})"""
GOAL_MS = 200.0


def _create_deployments(
    cp: ControlPlane, token: str, services: list[str], artifact: str, rounds: int
) -> None:
    from sami.v1 import deployment_pb2, deployment_pb2_grpc

    with grpc.insecure_channel(cp.addr) as ch:
        stub = deployment_pb2_grpc.DeploymentServiceStub(ch)
        for _ in range(rounds):
            for svc in services:
                for env in ENVIRONMENTS:
                    stub.CreateDeployment(
                        deployment_pb2.CreateDeploymentRequest(
                            service=svc, environment=env, artifact=artifact, reason="bench"
                        ),
                        metadata=bearer(token),
                        timeout=30,
                    )


def _sign_in(port: int, token: str) -> str:
    """The session cookie of a sign-in (name=value)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body=urlencode({"token": token, "next": "/"}),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{port}",
            },
        )
        resp = conn.getresponse()
        resp.read()
        cookie = resp.headers.get("Set-Cookie", "")
    finally:
        conn.close()
    m = re.match(r"([^=;]+=[^;]+)", cookie)
    if resp.status != 303 or not m:
        raise RuntimeError(f"sign-in failed: HTTP {resp.status}")
    return m.group(1)


def _server_times(port: int, cookie: str, loads: int) -> tuple[list[float], int]:
    times: list[float] = []
    size = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(loads + 2):
            t0 = time.perf_counter()
            conn.request("GET", "/", headers={"Cookie": cookie})
            resp = conn.getresponse()
            body = resp.read()
            times.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"GET / answered {resp.status}")
            size = len(body)
    finally:
        conn.close()
    return times[2:], size  # the first two warm the template and caches up


def _first_paints(
    port: int, cookie: str, loads: int, profile: Path
) -> tuple[list[float], list[float]]:
    """(first contentful paints of the overview, of the sign-in page: the baseline, the same
    server, stylesheet and browser without any data to read), in seconds."""
    if not CHROMIUM.exists():
        raise Skipped(f"{CHROMIUM} is missing (scripts/install-engine.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Skipped("playwright is not installed (the dev extra has it)") from None
    name, _, value = cookie.partition("=")
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.new_page()
            baseline = _paints(page, f"{base}/login", loads)
            context.add_cookies([{"name": name, "value": value, "url": f"{base}/"}])
            overview = _paints(page, f"{base}/", loads)
        finally:
            context.close()
    return overview, baseline


def _paints(page: Any, url: str, loads: int) -> list[tuple[float, float]]:
    paints: list[tuple[float, float]] = []
    for i in range(loads + 2):
        page.goto(url, wait_until="load")
        if page.url != url:
            raise RuntimeError(f"{url} went to {page.url}")
        fcp = page.evaluate(_FCP)
        if fcp is None:
            raise RuntimeError(f"chromium reported no first-contentful-paint for {url}")
        # The whole table is in the document (the answer is streamed: the first paint may
        # come before it).
        dcl = page.evaluate(
            "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
        )
        if i >= 2:  # the first two warm the browser's and the server's caches up
            paints.append((float(fcp) / 1000.0, float(dcl) / 1000.0))
    return paints


def fig_dashboard(ctx: Ctx) -> list[Row]:
    p = ctx.params
    root = ctx.folder("dashboard")
    ui_port = free_port()
    cp = ControlPlane(root, "--ui-listen", f"127.0.0.1:{ui_port}")
    cp.create_cluster()
    admin = cp.token("admin", name="bench-admin")
    reader = cp.token("reader", name="bench-reader")
    cp.start()
    try:
        services = service_names(p.ui_services)
        cp.sync_manifests(admin, deployments_repo(services, environments=ENVIRONMENTS))
        artifact = cp.register_artifact(admin)
        _create_deployments(cp, admin, services, artifact, p.ui_rounds)
        cookie = _sign_in(ui_port, reader)
        server, size = _server_times(ui_port, cookie, p.ui_loads)
        try:
            paints, baseline = _first_paints(ui_port, cookie, p.ui_loads, root / "chromium-profile")
            skipped = ""
        except Skipped as exc:
            paints, baseline, skipped = [], [], str(exc)
    finally:
        cp.stop()
    scale = f"{p.ui_services} services x {len(ENVIRONMENTS)} environments"
    server_ms = ms(statistics.median(server))
    rows = [
        Row(
            "9",
            f"dashboard overview GET / ({scale}): server answer p50",
            server_ms,
            "ms",
            note=f"p95 {ms(percentile(server, 95)):.0f} ms; {size // 1024} KiB of HTML; "
            f"{len(server)} loads",
            extra={"p95_ms": ms(percentile(server, 95)), "bytes": size},
        )
    ]
    if not paints:
        rows.append(
            Row("9", "dashboard overview first paint", None, "", note=f"skipped: {skipped}")
        )
        return rows
    fcp = [f for f, _ in paints]
    dcl = [d for _, d in paints]
    paint_ms = ms(statistics.median(fcp))
    base_ms = ms(statistics.median([f for f, _ in baseline]))
    dcl_ms = ms(statistics.median(dcl))
    base_dcl_ms = ms(statistics.median([d for _, d in baseline]))
    page = f"first page of {OVERVIEW_PAGE} services"
    rows += [
        Row(
            "9",
            f"dashboard overview first contentful paint, chromium ({scale}) p50",
            paint_ms,
            "ms",
            f"< {GOAL_MS:.0f} ms",
            ratio_of(base_ms, paint_ms),
            paint_ms < GOAL_MS,
            note=f"p95 {ms(percentile(fcp, 95)):.0f} ms; {len(fcp)} loads; baseline: the "
            f"sign-in page (no data) {base_ms:.0f} ms; {page}; the frame is streamed before "
            "the data is read",
            extra={"p95_ms": ms(percentile(fcp, 95)), "baseline_ms": base_ms},
        ),
        Row(
            "9",
            "dashboard overview whole table in the page (DOMContentLoaded), chromium p50",
            dcl_ms,
            "ms",
            "",
            ratio_of(base_dcl_ms, dcl_ms),
            note=f"p95 {ms(percentile(dcl, 95)):.0f} ms; baseline: the sign-in page "
            f"{base_dcl_ms:.0f} ms; {page}",
            extra={"p95_ms": ms(percentile(dcl, 95)), "baseline_ms": base_dcl_ms},
        ),
    ]
    return rows
