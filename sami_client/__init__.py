"""The Sami client: `SamiClient`, a typed client over the sami.v1 stubs raising `SamiError`
for every failed call, and the `sami` CLI (`sami_client.cli`)."""

from sami_client.client import TERMINAL_STATES, SamiClient, WatchItem
from sami_client.errors import ExitCode, SamiError, WatchGapError, WatchTimeout

__all__ = [
    "TERMINAL_STATES",
    "ExitCode",
    "SamiClient",
    "SamiError",
    "WatchGapError",
    "WatchItem",
    "WatchTimeout",
]
