"""sami-agent: runs next to a swarm manager, dials the control plane and applies deployments.

`connection.Agent` is the stream loop, `leases` the per-lease bookkeeping that survives
reconnects, `jobs` turns an assignment into an executor run, `executors/` holds the
executors (Swarm, dry run) and `cli` the `sami-agent` command.
"""

from __future__ import annotations

from sami_common.version import VERSION


def package_version() -> str:
    """Sami's version, sent in Hello."""
    return VERSION
