from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sami_control import offline
from sami_control.core.controlplane import ControlPlane
from sami_control.core.settings import Settings
from sami_control.server import ControlServer, ServeConfig
from tests.control.core_env import Clock, make_env
from tests.harness import free_port


@dataclass
class LiveServer:
    addr: str
    data: Path
    server: ControlServer
    loop: asyncio.AbstractEventLoop

    def token(self, role: str, **kw: object) -> str:
        return offline.add_token(self.data, role, f"t-{role}", **kw).plaintext  # type: ignore[arg-type]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The real server (gRPC over a loopback socket, SQLite file) in a thread of this
    process: for tests about the API surface, where a subprocess adds nothing."""
    data = tmp_path / "data"
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, ControlServer] = {}
    stop = asyncio.Event()

    async def main() -> None:
        srv = ControlServer(
            ServeConfig(listen=f"127.0.0.1:{port}", data_dir=data, settings=Settings(), grace=0.5)
        )
        holder["s"] = srv
        await srv.start()
        ready.set()
        await stop.wait()
        await srv.stop()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert ready.wait(20), "server did not start"
    yield LiveServer(f"127.0.0.1:{port}", data, holder["s"], loop)
    loop.call_soon_threadsafe(stop.set)
    t.join(10)
    loop.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, Clock]]:
    """The core in-process over a real SQLite file, with a fake clock (core_env.py)."""
    async for env in make_env(tmp_path):
        yield env
