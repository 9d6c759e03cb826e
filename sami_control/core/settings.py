"""The control plane's tunables, set by `sami-control serve` flags (sami_control/cli.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    # An acked lease not renewed (heartbeat or progress) within this is offered again.
    lease_ttl: float = 30.0
    # An assignment not acked within this is offered again.
    ack_timeout: float = 10.0
    heartbeat_interval: float = 10.0
    # Deliveries before a deployment is failed instead of offered again.
    max_attempts: int = 5
    # After a control-plane start, leases get this long for their agents to reconnect.
    restart_grace: float = 30.0
    # A preview not deployed for this long counts as closed: its stack is torn down when
    # an agent reports it (a teardown CI forgot leaves no orphan for long).
    preview_ttl: float = 7 * 24 * 3600.0
    default_converge_timeout: float = 300.0
    # Open streams one token may hold, per kind (watches; agent sessions). 0: no limit.
    max_streams_per_token: int = 32
    # How often the tokens of open streams are re-read, to end the streams of tokens
    # revoked by another process (the offline `sami-control token revoke`).
    token_recheck_interval: float = 2.0
    # With other replicas: how often the watchers here are checked against the store, the
    # safety net under a lost notice (core/peers.py).
    peer_sweep_interval: float = 1.0
    # What a synced stack file may ask of the hosts: "off" (anything Swarm allows) or
    # "strict" (no host root, Docker socket, privileged mode…: SECURITY.md).
    stack_policy: str = "off"
    # Progress reports one agent session may send: this many per second on average, this
    # many at once; reports over it are dropped (logged), the lease stays renewed by
    # heartbeats. 0: no limit.
    max_progress_per_second: float = 20.0
    progress_burst: int = 200
    # Live preview stacks one service may have (each a stack on the cluster): a preview of
    # another pull request past it is refused until some are torn down. 0: no limit.
    max_previews_per_service: int = 20
    # The dashboard's address as people reach it (`--dashboard-url`): notifications link
    # to a deployment's page under it. "": no link.
    dashboard_url: str = ""
    # Notifications (core/notifications.py): tries per delivery, and the first retry's
    # delay in seconds (doubling, at most notify_backoff_cap).
    notify_max_attempts: int = 10
    notify_backoff: float = 2.0
    notify_backoff_cap: float = 600.0
    # An HTTP request to a receiver gets this long (connect to last byte).
    notify_timeout: float = 10.0
    # Deliveries delivered or dead are kept this long (`sami notify log`), then deleted.
    notify_retention: float = 14 * 24 * 3600.0
    # Replicas short or tasks unhealthy for longer than this is drift (docs/status.md).
    drift_grace: float = 30.0
    # A target with `on_drift: redeploy` is redeployed by Sami at most once this often.
    drift_redeploy_interval: float = 300.0
    # Queries to agents (logs, plans: core/queries.py): open at once per agent session;
    # per answer stream, lines and bytes in all and lines per second (the agent paces).
    max_queries_per_agent: int = 4
    query_max_lines: int = 100_000
    query_max_bytes: int = 32 * 1024 * 1024
    query_lines_per_second: float = 2000.0
    # An agent that has not started answering a query within this has not understood it
    # (an older agent) or is stuck: the caller gets UNAVAILABLE.
    query_answer_timeout: float = 15.0
