"""The live status rows as the dashboard shows them (docs/status.md): one dict of display
texts per swarm service, made here once, so that the page's table (status.html) and its live
updates (status.js, through /status/events) show the same words. Everything is text: the
page's script puts it in with textContent."""

from __future__ import annotations

from typing import Any

from sami_control.core.live_status import ServiceStatus, running_digest
from sami_control.web import render

# health → the CSS class of its colour (never the colour alone: the word is shown too).
HEALTH_CLASS = {"healthy": "ok", "updating": "running", "degraded": "bad", "removed": "bad"}


def status_row(s: ServiceStatus, now: float) -> dict[str, Any]:
    live = s.live
    health = s.health
    if live.unhealthy_tasks:
        health += f" ({live.unhealthy_tasks} unhealthy)"
    drift = ""
    if s.drift_reason:
        drift = f"{s.drift_reason} (since {render.ago(s.drift_since, now)})"
    return {
        "service": live.service,
        "environment": live.environment,
        "target": live.environment + (f" #{live.pull_request}" if live.pull_request else ""),
        "swarm_service": f"{live.stack_name}_{live.swarm_service}",
        "artifact": s.artifact_name or "?",
        "digest": render.short_digest(running_digest(live.image)) or "—",
        "deployment_id": live.deployment_id,
        "deployed": render.ago(s.deploy_time, now),
        "replicas": f"{live.running_replicas}/{live.desired_replicas}",
        "health": health,
        "health_class": HEALTH_CLASS.get(s.health, "muted"),
        "stale": f"stale: last report {render.ago(s.report_time, now)}" if s.stale else "",
        "drift": drift,
    }
