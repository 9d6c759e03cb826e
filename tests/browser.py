"""The browser the dashboard's tests and its benchmark drive: Debian's chromium (never a
downloaded one), headless, with nothing that reaches beyond loopback (updates, sync, QUIC
probes, background networking). scripts/install-engine.sh installs it."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
