"""sami-agent: runs next to a swarm manager, dials the control plane and applies deployments.

`connection.Agent` is the stream loop, `leases` the per-lease bookkeeping that survives
reconnects, `jobs` turns an assignment into an executor run, `executors/` holds the
executors (Swarm, dry run) and `cli` the `sami-agent` command.
"""

from __future__ import annotations

from sami_common.logs import quiet_grpc_core
from sami_common.version import VERSION

# Before anything imports grpc, whose C core reads its settings when it starts: its own
# lines on stderr would break the one-JSON-object-per-line logs (sami_common/logs.py).
quiet_grpc_core()


def package_version() -> str:
    """Sami's version, sent in Hello."""
    return VERSION
