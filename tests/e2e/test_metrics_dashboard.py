"""Metrics of real processes: sami-control and a dry-run sami-agent, both with
--metrics-listen, scraped after a deployment (through the CLI) and a webhook request; the
Grafana dashboard in deploy/grafana queries only metrics these scrapes contain."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import FAST, REF, sync
from tests.harness import ControlPlane, agent, free_port, sami, stopping, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sami-dashboard.json"
# Metric names in PromQL: ours and the process collector's.
METRIC = re.compile(r"\b(?:sami|process|python)_[a-z0-9_]+\b")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for ls, v in samples.get(name, []) if labels.items() <= ls.items())


def dashboard_metrics() -> set[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(DASHBOARD.read_text()))
    assert exprs, "the dashboard has no queries"
    return {m for e in exprs for m in METRIC.findall(e)}


def test_scrapes_after_a_deployment_hold_every_metric_the_dashboard_queries(
    tmp_path: Path,
) -> None:
    control_metrics, agent_metrics, webhook = free_port(), free_port(), free_port()
    control = ControlPlane(
        tmp_path,
        *FAST,
        "--metrics-listen",
        f"127.0.0.1:{control_metrics}",
        "--webhook-listen",
        f"127.0.0.1:{webhook}",
    )
    control.cluster("local", "stage", "production", "pull_request")
    admin = control.token("admin", name="ci")
    agent_token = control.token("agent", "--cluster", "local", name="agent")
    control.start()
    worker = agent(
        control,
        agent_token,
        "agent-1",
        tmp_path,
        "--dry-run",
        "--dry-run-step-seconds",
        "0.05",
        "--metrics-listen",
        f"127.0.0.1:{agent_metrics}",
    )
    with stopping([worker, control]):
        sync(control, admin)
        assert sami(control, admin, "artifact", "register", "web", "--ref", REF).rc == 0
        r = sami(control, admin, "deploy", "web", "--env", "stage", "--artifact", REF, "--wait")
        assert r.rc == 0, (r.out, r.err, worker.log()[-2000:])
        req = urllib.request.Request(
            f"http://127.0.0.1:{webhook}/deployment_request",
            data=json.dumps(
                {"service": "api", "env": "prod", "artifact": REF, "wait": True, "timeout": 60}
            ).encode(),
            headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=90) as answer:
            assert json.loads(answer.read())["state"] == "SUCCEEDED"
        # A heartbeat after the jobs: the agent sends one every 0.5 s (FAST).
        wait_for(
            lambda: (
                total(scrape(agent_metrics), "sami_agent_last_heartbeat_timestamp_seconds")
                > time.time() - 5
            ),
            what="an agent heartbeat",
        )
        c = scrape(control_metrics)
        a = scrape(agent_metrics)

    t = "sami_deployment_transitions_total"
    assert total(c, t, state="SUCCEEDED", environment="stage") == 1
    assert total(c, t, state="SUCCEEDED", environment="production") == 1
    assert total(c, "sami_deployment_queue_wait_seconds_count") == 2
    assert total(c, "sami_deployment_rollout_seconds_count", state="SUCCEEDED") == 2
    assert total(c, "sami_agents_connected", cluster="local") == 1
    assert total(c, "sami_queue_depth") == 0
    assert total(c, "sami_webhook_requests_total", code="200") == 1
    assert total(c, "sami_grpc_server_handled_total", grpc_method="Connect") == 0  # still open
    assert total(c, "sami_grpc_server_handled_total", grpc_method="CreateDeployment") == 1

    assert total(a, "sami_agent_jobs_total", outcome="succeeded") == 2
    assert total(a, "sami_agent_job_duration_seconds_count", outcome="succeeded") == 2
    assert total(a, "sami_agent_connected") == 1
    assert total(a, "sami_agent_jobs_running") == 0
    assert total(a, "sami_agent_info", agent_id="agent-1") == 1

    exposed = set(c) | set(a)
    missing = sorted(dashboard_metrics() - exposed)
    assert not missing, f"the dashboard queries metrics no scrape has: {missing}"
