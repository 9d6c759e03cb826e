"""A crowd of lean agents in one process, for the reconnect-storm test: each dials, says
Hello, heartbeats as the Welcome says, and when its stream ends reconnects with the same
jittered exponential backoff as sami-agent. Prints one JSON line per second:
{"connected": N, "welcomes": total}. Runs until killed (or --lifetime)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc
import grpc.aio

from bench.common import raise_fd_limit
from bench.simagent import OPTIONS
from sami.v1 import agent_pb2, agent_pb2_grpc
from sami_common.backoff import Backoff


class Crowd:
    def __init__(self) -> None:
        self.connected = 0
        self.welcomes = 0


async def heartbeats(call: grpc.aio.StreamStreamCall, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))


async def agent(addr: str, token: str, agent_id: str, crowd: Crowd) -> None:
    backoff = Backoff()
    while True:
        channel = grpc.aio.insecure_channel(addr, options=OPTIONS)
        welcomed = False
        try:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect(
                metadata=(("authorization", f"Bearer {token}"),)
            )
            await call.write(
                agent_pb2.AgentMessage(
                    hello=agent_pb2.Hello(
                        agent_id=agent_id, version="storm", capabilities=["swarm"]
                    )
                )
            )
            first = await asyncio.wait_for(call.read(), 30)
            if first is grpc.aio.EOF or first.WhichOneof("msg") != "welcome":
                raise RuntimeError("no welcome")
            welcomed = True
            crowd.connected += 1
            crowd.welcomes += 1
            backoff.reset()
            hb = first.welcome.heartbeat_interval
            interval = (hb.seconds + hb.nanos / 1e9) or 10.0

            beating = asyncio.create_task(heartbeats(call, interval))
            try:
                while (await call.read()) is not grpc.aio.EOF:
                    pass
            finally:
                beating.cancel()
        except (grpc.aio.AioRpcError, RuntimeError, TimeoutError, asyncio.InvalidStateError):
            pass
        finally:
            if welcomed:
                crowd.connected -= 1
            await channel.close(grace=None)
        await asyncio.sleep(backoff.next_delay())


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("token")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--lifetime", type=float, default=300)
    args = p.parse_args()
    raise_fd_limit()
    crowd = Crowd()
    tasks = [
        asyncio.create_task(agent(args.addr, args.token, f"storm-{i}", crowd))
        for i in range(args.agents)
    ]
    end = time.monotonic() + args.lifetime
    while time.monotonic() < end:
        print(json.dumps({"connected": crowd.connected, "welcomes": crowd.welcomes}), flush=True)
        await asyncio.sleep(1)
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
