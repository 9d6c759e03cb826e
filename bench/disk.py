"""A storage floor: durable SQLite commits per second on the disk the control plane's data
lives on, with the settings Sami uses (WAL, synchronous=FULL, BEGIN IMMEDIATE), one row per
commit, in a process of its own. Every state change of a deployment costs at least one such
commit, so this bounds what any design with that durability can do here."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bench.workers import Link


def commits_worker(link: Link, folder: str, duration: float, max_commits: int) -> None:
    path = Path(folder) / "floor.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    link.send("ready")
    link.recv_blocking(["go"], 120)
    body = "x" * 200
    n = 0
    t0 = time.monotonic()
    deadline = t0 + duration
    while n < max_commits and time.monotonic() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
        n += 1
    elapsed = time.monotonic() - t0
    conn.close()
    link.send("result", {"commits": n, "elapsed": elapsed})
