"""psycopg 3 against asyncpg on what the control plane does most: a state change, one
transaction of 3 small reads and 2 writes (read the deployment, its last event and its
token; update the deployment, append an event), through a pool, on a local PostgreSQL.

    python -m bench.pg_driver postgresql://USER@127.0.0.1:PORT/DB [--tx 3000] [--tasks 1 8]

Needs both drivers: asyncpg (the `control` extra) and psycopg (`pip install
'psycopg[binary]' psycopg-pool`, in no extra: it lost). Prints transactions/s and the
client's CPU per transaction (this process's CPU time: what the driver costs the control
plane), for one task and for several concurrent ones. Numbers, not assertions; the choice
it informed is in ARCHITECTURE.md (PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

SCHEMA = """
DROP TABLE IF EXISTS bench_dep, bench_ev, bench_tok;
CREATE TABLE bench_tok (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL);
CREATE TABLE bench_dep (id TEXT PRIMARY KEY, state INTEGER NOT NULL, token TEXT NOT NULL,
    last_sequence BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE bench_ev (deployment_id TEXT NOT NULL, sequence BIGINT NOT NULL,
    state INTEGER NOT NULL, message TEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (deployment_id, sequence));
INSERT INTO bench_tok SELECT 'tok_' || i, 'ci', 'deployer' FROM generate_series(1, 100) i;
INSERT INTO bench_dep SELECT 'dep_' || i, 1, 'tok_' || (i % 100 + 1), 0, 0
    FROM generate_series(1, 1000) i;
"""

READ_DEP = "SELECT id, state, token, last_sequence FROM bench_dep WHERE id = {0}"
READ_LAST = "SELECT sequence FROM bench_ev WHERE deployment_id = {0} ORDER BY sequence DESC LIMIT 1"
READ_TOK = "SELECT id, name, role FROM bench_tok WHERE id = {0}"
UPDATE_DEP = (
    "UPDATE bench_dep SET state = {0}, last_sequence = {1}, updated_at = {2} WHERE id = {3}"
)
INSERT_EV = (
    "INSERT INTO bench_ev (deployment_id, sequence, state, message, time) "
    "VALUES ({0}, {1}, {2}, {3}, {4})"
)


def _sql(template: str, style: str, n: int) -> str:
    marks = [f"${i + 1}" for i in range(n)] if style == "$" else ["%s"] * n
    return template.format(*marks)


async def _psycopg(url: str, pool_size: int) -> tuple[Callable[[int], Awaitable[None]], Any]:
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(url, min_size=pool_size, max_size=pool_size, open=False)
    await pool.open(wait=True)
    q = {k: _sql(v, "%s", v.count("{")) for k, v in _QUERIES.items()}

    async def one(i: int) -> None:
        dep = f"dep_{i % 1000 + 1}"
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(q["dep"], (dep,))
            row = await cur.fetchone()
            assert row is not None
            await (await conn.execute(q["last"], (dep,))).fetchone()
            await (await conn.execute(q["tok"], (row[2],))).fetchone()
            seq = row[3] + 1
            await conn.execute(q["update"], (3, seq, time.time(), dep))
            await conn.execute(q["insert"], (dep, seq, 3, "progress", time.time()))

    return one, pool


async def _asyncpg(url: str, pool_size: int) -> tuple[Callable[[int], Awaitable[None]], Any]:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    q = {k: _sql(v, "$", v.count("{")) for k, v in _QUERIES.items()}

    async def one(i: int) -> None:
        dep = f"dep_{i % 1000 + 1}"
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(q["dep"], dep)
            await conn.fetchrow(q["last"], dep)
            await conn.fetchrow(q["tok"], row[2])
            seq = row[3] + 1
            await conn.execute(q["update"], 3, seq, time.time(), dep)
            await conn.execute(q["insert"], dep, seq, 3, "progress", time.time())

    return one, pool


_QUERIES = {
    "dep": READ_DEP,
    "last": READ_LAST,
    "tok": READ_TOK,
    "update": UPDATE_DEP,
    "insert": INSERT_EV,
}
DRIVERS = {"psycopg": _psycopg, "asyncpg": _asyncpg}


async def _reset(url: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(SCHEMA)


async def measure(url: str, driver: str, count: int, tasks: int) -> tuple[float, float]:
    """(transactions/s, CPU µs per transaction) of `count` state changes by `tasks`
    concurrent tasks."""
    await _reset(url)
    one, pool = await DRIVERS[driver](url, max(tasks, 2))
    for i in range(50):  # warm up: connections, prepared statements
        await one(10_000 + i)
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await pool.close()
    return count / wall, cpu / count * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--tx", type=int, default=3000)
    p.add_argument("--tasks", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(f"{'driver':<10}{'tasks':>6}{'tx/s':>10}{'CPU µs/tx':>12}")
    for tasks in args.tasks:
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both
            for driver in DRIVERS:
                rate, cpu = asyncio.run(measure(args.url, driver, args.tx, tasks))
                print(f"{driver:<10}{tasks:>6}{rate:>10.0f}{cpu:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
