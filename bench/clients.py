"""Simulated clients (CI jobs and people): CreateDeployment in a closed loop, whole
lifecycles (create, then watch to the end), paced creates, and crowds of watchers. Each
runs as a worker process (bench/workers.py) on raw sami.v1 stubs over grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import grpc
import grpc.aio

from bench.control import bearer
from bench.loop import closed_loop
from bench.workers import Link
from sami.v1 import deployment_pb2, deployment_pb2_grpc
from sami_common.dial import CHANNEL_OPTIONS

TERMINAL = frozenset(
    {
        deployment_pb2.SUCCEEDED,
        deployment_pb2.FAILED,
        deployment_pb2.ROLLED_BACK,
        deployment_pb2.CANCELLED,
        deployment_pb2.SUPERSEDED,
    }
)
OWN_CONNECTION = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
# Paced creates come from this many clients, each on a connection of its own.
PACED_CLIENTS = 8


def _request(service: str, artifact: str) -> deployment_pb2.CreateDeploymentRequest:
    return deployment_pb2.CreateDeploymentRequest(
        service=service, environment="stage", artifact=artifact, reason="bench"
    )


# -- 2: CreateDeployment, closed loop -----------------------------------------------------------


def create_worker(
    link: Link, addr: str, token: str, artifact: str, services: list[str], concurrency: int
) -> None:
    asyncio.run(_create(link, addr, token, artifact, services, concurrency))


async def _create(
    link: Link, addr: str, token: str, artifact: str, services: list[str], concurrency: int
) -> None:
    md = bearer(token)
    async with grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        await channel.channel_ready()
        stub = deployment_pb2_grpc.DeploymentServiceStub(channel)
        requests = [_request(s, artifact) for s in services]
        link.send("ready")
        _, go = await link.recv(["go"], 120)

        async def call(i: int, n: int) -> Any:
            # Coroutine i walks the services from its own offset: spread over all of them.
            req = requests[(i + n * concurrency) % len(requests)]
            return await stub.CreateDeployment(req, metadata=md, timeout=30)

        res = await closed_loop(call, concurrency, go["duration"], go["max_calls"], go["warmup"])
    link.send("result", res.to_dict())


# -- 3: whole lifecycles ------------------------------------------------------------------------


def lifecycle_worker(
    link: Link, addr: str, tokens: list[str], artifact: str, services: list[str]
) -> None:
    """One coroutine per service: create a deployment, watch it to its end, again. Token i
    serves coroutines i*k.. (a token may hold a limited number of watch streams)."""
    asyncio.run(_lifecycles(link, addr, tokens, artifact, services))


async def _lifecycles(
    link: Link, addr: str, tokens: list[str], artifact: str, services: list[str]
) -> None:
    per_token = -(-len(services) // len(tokens))
    outcomes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        await channel.channel_ready()
        stub = deployment_pb2_grpc.DeploymentServiceStub(channel)
        link.send("ready")
        _, go = await link.recv(["go"], 120)

        async def call(i: int, n: int) -> Any:
            md = bearer(tokens[i // per_token])
            d = await stub.CreateDeployment(
                _request(services[i], artifact), metadata=md, timeout=30
            )
            state = d.state
            watch = stub.WatchDeployment(
                deployment_pb2.WatchDeploymentRequest(name=d.id), metadata=md, timeout=60
            )
            async for item in watch:
                if item.WhichOneof("item") == "event" and item.event.state:
                    state = item.event.state
                elif item.WhichOneof("item") == "deployment":
                    state = item.deployment.state
                if state in TERMINAL:
                    break
            watch.cancel()
            outcomes[deployment_pb2.DeploymentState.Name(state)] += 1

        res = await closed_loop(call, len(services), go["duration"], go["max_calls"], go["warmup"])
    out = res.to_dict()
    out["outcomes"] = dict(outcomes)
    link.send("result", out)


# -- 4: paced creates (pickup latency) ----------------------------------------------------------


def paced_worker(
    link: Link, addr: str, token: str, artifact: str, services: list[str], rate: float
) -> None:
    """Create deployments at `rate` per second (open loop: on schedule, whatever the
    latency), round robin over `services`; report when each CreateDeployment returned."""
    asyncio.run(_paced(link, addr, token, artifact, services, rate))


async def _paced(
    link: Link, addr: str, token: str, artifact: str, services: list[str], rate: float
) -> None:
    md = bearer(token)
    returned: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    error_details: dict[str, str] = {}
    late = 0
    # Several clients (CI jobs), each on its own connection.
    channels = [
        grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(PACED_CLIENTS)
    ]
    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        stubs = [deployment_pb2_grpc.DeploymentServiceStub(c) for c in channels]
        requests = [_request(s, artifact) for s in services]
        link.send("ready")
        _, go = await link.recv(["go"], 120)
        count = int(go["duration"] * rate)

        async def one(k: int) -> None:
            t0 = time.monotonic()
            try:
                d = await stubs[k % len(stubs)].CreateDeployment(
                    requests[k % len(requests)], metadata=md, timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                error_details.setdefault(exc.code().name, str(exc.details())[:300])
                return
            returned[d.id] = time.time()
            latencies.append(time.monotonic() - t0)

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic() + 0.05
        for k in range(count):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late += 1
            tasks.append(asyncio.create_task(one(k)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        elapsed = time.monotonic() - start
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    link.send(
        "result",
        {
            "returned": returned,
            "latencies": latencies,
            "errors": dict(errors),
            "error_details": error_details,
            "sent": count,
            "late": late,
            "elapsed": elapsed,
        },
    )


# -- 6: watchers of one deployment --------------------------------------------------------------


def watchers_worker(
    link: Link,
    addr: str,
    tokens: list[str],
    deployment_id: str,
    count: int,
    per_channel: int,
    timeout: float,
) -> None:
    """`count` watchers of one deployment. Ready once each has read what happened so far;
    then each records, for every new event, now - event.time (the time the control plane
    gave the event), until the deployment ends or `timeout`."""
    asyncio.run(_watchers(link, addr, tokens, deployment_id, count, per_channel, timeout))


async def _watchers(
    link: Link,
    addr: str,
    tokens: list[str],
    deployment_id: str,
    count: int,
    per_channel: int,
    timeout: float,
) -> None:
    per_token = -(-count // len(tokens))
    channels = [
        grpc.aio.insecure_channel(addr, options=OWN_CONNECTION)
        for _ in range(-(-count // per_channel))
    ]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    error_details: dict[str, str] = {}
    ended = 0
    caught_up = 0
    failed = 0
    all_caught_up = asyncio.Event()

    def settled() -> None:
        if caught_up + failed >= count:
            all_caught_up.set()

    async def watch(i: int) -> None:
        nonlocal ended, caught_up, failed
        stub = deployment_pb2_grpc.DeploymentServiceStub(channels[i // per_channel])
        md = bearer(tokens[i // per_token])
        initial_sequence = -1
        counted = False
        try:
            call = stub.WatchDeployment(
                deployment_pb2.WatchDeploymentRequest(name=deployment_id), metadata=md
            )
            async for item in call:
                now = time.time()
                if item.WhichOneof("item") == "deployment":
                    initial_sequence = item.deployment.last_sequence
                    continue
                e = item.event
                if e.sequence <= initial_sequence:
                    if e.sequence == initial_sequence and not counted:
                        counted = True
                        caught_up += 1
                        settled()
                    continue
                latencies.append(now - (e.time.seconds + e.time.nanos / 1e9))
                if e.type == deployment_pb2.STATE_CHANGED and e.state in TERMINAL:
                    ended += 1
                    return
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
            error_details.setdefault(exc.code().name, str(exc.details())[:300])
            if not counted:
                failed += 1
                settled()

    tasks = [asyncio.create_task(watch(i)) for i in range(count)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_caught_up.wait(), 120)
        link.send(
            "ready",
            {"caught_up": caught_up, "errors": dict(errors), "error_details": error_details},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
    link.send(
        "result",
        {
            "latencies": latencies,
            "ended": ended,
            "errors": dict(errors),
            "error_details": error_details,
        },
    )
