"""sami-agent: runs next to a swarm manager, dials the control plane and applies deployments.

`connection.Agent` is the stream loop, `leases` the per-lease bookkeeping that survives
reconnects, `jobs` turns an assignment into an executor run, `executors/` holds the
executors (Swarm, dry run) and `cli` the `sami-agent` command.
"""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The installed `sami` distribution's version, sent in Hello."""
    try:
        return metadata.version("sami")
    except metadata.PackageNotFoundError:
        # Running from a source tree that was never installed.
        return "0+unknown"
