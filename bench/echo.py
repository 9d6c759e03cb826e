"""The baseline: a bare grpc.aio service (generic handlers, raw bytes, no Sami code), served by
`python -m bench.echo --listen HOST:PORT`, and the load workers that drive it.

Each Sami figure has its grpc.aio floor measured here, in the same run, on the same machine,
with the same process layout and the same client loop (bench/loop.py):

- `Unary`, `Bidi`: echo calls and round trips (vs CreateDeployment).
- `Sink`: a stream that answers its first message and then only reads, like an idle agent
  stream with heartbeats (vs connected idle agents).
- `Subscribe` + `Publish`: a broker. `Publish(b"1" + id)` hands `id` to one subscriber (round
  robin; vs the pickup of an assignment), `Publish(b"*" + x)` to every subscriber, stamped
  with the server's time.time() (vs watch fan-out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio

from bench.common import raise_fd_limit
from bench.loop import closed_loop
from bench.workers import Link

SERVICE = "bench.Echo"
# About the size of a CreateDeploymentRequest or an agent report.
PAYLOAD = b"x" * 96
HELLO = b"hello"
OK = b"ok"
END = b"end"
# Each stream its own TCP connection, as for the simulated agents.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


class Broker:
    def __init__(self) -> None:
        self.subscribers: list[asyncio.Queue[bytes]] = []
        self._next = itertools.count()

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def bidi(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for message in request_iterator:
            yield message

    async def sink(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        first = True
        async for _ in request_iterator:
            if first:
                first = False
                yield OK

    async def subscribe(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        self.subscribers.append(q)
        try:
            yield OK
            while True:
                yield await q.get()
        finally:
            self.subscribers.remove(q)

    async def publish(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        mode, payload = request[:1], request[1:]
        if not self.subscribers:
            return b""
        if mode == b"1":
            subs = self.subscribers
            subs[next(self._next) % len(subs)].put_nowait(payload)
        else:
            stamped = struct.pack("<d", time.time()) + payload
            for q in self.subscribers:
                q.put_nowait(stamped)
        return b""

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
                "Sink": grpc.stream_stream_rpc_method_handler(self.sink),
                "Subscribe": grpc.unary_stream_rpc_method_handler(self.subscribe),
                "Publish": grpc.unary_unary_rpc_method_handler(self.publish),
            },
        )


async def serve(listen: str, handler: grpc.GenericRpcHandler | None = None) -> None:
    """Serve `handler` (the echo Broker's by default) until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler or Broker().handler(),))
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.echo")
    p.add_argument("--listen", required=True)
    args = p.parse_args(argv)
    raise_fd_limit()
    asyncio.run(serve(args.listen))
    return 0


# -- load: echo ------------------------------------------------------------------------------


def client_worker(link: Link, addr: str, kind: str, concurrency: int) -> None:
    """Worker: wait for `go` {duration, max_calls, warmup}; run `kind` (unary | bidi)."""
    asyncio.run(_client(link, addr, kind, concurrency))


async def _client(link: Link, addr: str, kind: str, concurrency: int) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        await channel.channel_ready()
        link.send("ready")
        _, go = await link.recv(["go"], 120)
        if kind == "unary":
            unary = channel.unary_unary(method("Unary"))

            async def call(i: int, n: int) -> Any:
                return await unary(PAYLOAD, timeout=30)

            res = await closed_loop(
                call, concurrency, go["duration"], go["max_calls"], go["warmup"]
            )
        else:
            bidi = channel.stream_stream(method("Bidi"))
            streams = [bidi() for _ in range(concurrency)]

            async def call(i: int, n: int) -> Any:
                s = streams[i]
                await s.write(PAYLOAD)
                return await s.read()

            res = await closed_loop(
                call, concurrency, go["duration"], go["max_calls"], go["warmup"]
            )
            for s in streams:
                s.cancel()
        link.send("result", res.to_dict())


# -- load: idle streams ----------------------------------------------------------------------


def idle_streams_worker(
    link: Link,
    addr: str,
    count: int,
    heartbeat_interval: float,
    batch: int,
    options: list[tuple[str, Any]] | None = None,
    answered: bool = False,
) -> None:
    """`count` streams, each on its own connection: hello, wait for the answer, then a
    small message every `heartbeat_interval` (spread), until `stop`. `answered`: on the
    Bidi method, each message waits for its answer (an agent's Heartbeat/HeartbeatAck);
    else on Sink. `options`: channel options added (e.g. the agents' keepalives)."""
    asyncio.run(
        _idle_streams(link, addr, count, heartbeat_interval, batch, options or [], answered)
    )


async def _idle_streams(
    link: Link,
    addr: str,
    count: int,
    heartbeat_interval: float,
    batch: int,
    options: list[tuple[str, Any]],
    answered: bool,
) -> None:
    channels = [
        grpc.aio.insecure_channel(addr, options=[*OWN_CONNECTION, *options]) for _ in range(count)
    ]
    calls: list[Any] = []
    sent = 0
    errors: Counter[str] = Counter()

    async def open_one(ch: grpc.aio.Channel) -> Any:
        call = ch.stream_stream(method("Bidi" if answered else "Sink"))()
        await call.write(HELLO)
        await call.read()
        return call

    async def beat(call: Any) -> None:
        nonlocal sent
        await asyncio.sleep(random.uniform(0, heartbeat_interval))
        while True:
            await call.write(PAYLOAD[:16])
            if answered:
                await call.read()
            sent += 1
            await asyncio.sleep(heartbeat_interval)

    beats: list[asyncio.Task[None]] = []
    t0 = time.monotonic()
    try:
        for start in range(0, count, batch):
            got = await asyncio.gather(
                *(asyncio.wait_for(open_one(c), 60) for c in channels[start : start + batch]),
                return_exceptions=True,
            )
            for g in got:
                if isinstance(g, BaseException):
                    errors[type(g).__name__] += 1
                else:
                    calls.append(g)
                    beats.append(asyncio.create_task(beat(g)))
        link.send(
            "ready",
            {"connected": len(calls), "errors": dict(errors), "seconds": time.monotonic() - t0},
        )
        with contextlib.suppress(TimeoutError):
            await link.recv(["stop"], 900)
    finally:
        for b in beats:
            b.cancel()
        for c in calls:
            c.cancel()
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    link.send("result", {"connected": len(calls), "heartbeats": sent, "errors": dict(errors)})


# -- load: broker (pickup and fan-out baselines) -------------------------------------------------


def subscribers_worker(link: Link, addr: str, count: int, per_channel: int, timeout: float) -> None:
    """`count` subscribers. Records, per payload handed to one subscriber, when it arrived
    (`receipts`); per broadcast, now - the server's stamp (`latencies`). Ends at `stop`, or
    once every subscriber got the END broadcast, or after `timeout`."""
    asyncio.run(_subscribers(link, addr, count, per_channel, timeout))


async def _subscribers(link: Link, addr: str, count: int, per_channel: int, timeout: float) -> None:
    channels = [
        grpc.aio.insecure_channel(addr, options=OWN_CONNECTION)
        for _ in range(-(-count // per_channel))
    ]
    receipts: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    subscribed = 0
    ended = 0
    everyone = asyncio.Event()
    all_ended = asyncio.Event()

    async def sub(i: int) -> None:
        nonlocal subscribed, ended
        call = channels[i // per_channel].unary_stream(method("Subscribe"))(b"")
        try:
            async for msg in call:
                now = time.time()
                if msg == OK:
                    subscribed += 1
                    if subscribed == count:
                        everyone.set()
                elif len(msg) >= 8 and msg[8:] in (PAYLOAD, END):
                    latencies.append(now - struct.unpack("<d", msg[:8])[0])
                    if msg[8:] == END:
                        ended += 1
                        if ended == count:
                            all_ended.set()
                        return
                else:
                    receipts[msg.decode()] = now
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1

    tasks = [asyncio.create_task(sub(i)) for i in range(count)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 120)
        link.send("ready", {"subscribed": subscribed, "errors": dict(errors)})
        stop = asyncio.create_task(link.recv(["stop"], timeout))
        ends = asyncio.create_task(all_ended.wait())
        await asyncio.wait({stop, ends}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ends.cancel()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    link.send(
        "result",
        {"receipts": receipts, "latencies": latencies, "ended": ended, "errors": dict(errors)},
    )


def publisher_worker(link: Link, addr: str, mode: str, rate: float, clients: int = 1) -> None:
    """Publish on schedule: mode `one` hands ids to one subscriber each, at `rate` per second
    for `go.duration`; mode `all` broadcasts `go.count` times at `rate` per second, then END.
    Reports when each `one` publish returned (`returned`). `clients` connections take turns."""
    asyncio.run(_publisher(link, addr, mode, rate, clients))


async def _publisher(link: Link, addr: str, mode: str, rate: float, clients: int) -> None:
    returned: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    channels = [grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        publishers = [c.unary_unary(method("Publish")) for c in channels]
        link.send("ready")
        _, go = await link.recv(["go"], 120)
        count = int(go["duration"] * rate) if mode == "one" else int(go["count"])

        async def one(k: int) -> None:
            t0 = time.monotonic()
            body = (b"1" + str(k).encode()) if mode == "one" else (b"*" + PAYLOAD)
            try:
                await publishers[k % clients](body, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                return
            returned[str(k)] = time.time()
            latencies.append(time.monotonic() - t0)

        start = time.monotonic() + 0.05
        tasks: list[asyncio.Task[None]] = []
        for k in range(count):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        if mode == "all":
            await asyncio.sleep(1.0 / rate)
            await publishers[0](b"*" + END, timeout=30)
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    link.send("result", {"returned": returned, "latencies": latencies, "errors": dict(errors)})


if __name__ == "__main__":
    sys.exit(main())
