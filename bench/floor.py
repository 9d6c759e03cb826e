"""The floor of CreateDeployment: the work any durable implementation of the call must do,
on bare grpc.aio with none of Sami's layers, served by `python -m bench.floor`.

Per call: parse the CreateDeploymentRequest, check the bearer token against a SHA-256, check
the required fields, supersede the key's queued deployment (one indexed UPDATE and its
event), insert the deployment, its first event and an audit row, and answer a Deployment
once the commit is on disk. Commits are grouped as Sami groups them (the calls of one turn
of the event loop share one COMMIT, run by a thread; WAL, synchronous=FULL), so what this
measures is grpc.aio + protobuf + SQLite, and the distance from it to Sami's figure is what
Sami's own code costs (auth, validation, manifests, idempotency, fencing, logging,
conversion). Figure 1 prints it next to the echo limit; figure 2's notes compare with it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench import echo
from bench.common import raise_fd_limit
from sami.v1 import deployment_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    seq INTEGER PRIMARY KEY, id TEXT UNIQUE, service TEXT, environment TEXT,
    artifact TEXT, state INTEGER, reason TEXT, created_by TEXT, created_at REAL,
    updated_at REAL);
CREATE INDEX IF NOT EXISTS deployments_key ON deployments (service, environment, state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, deployment TEXT, state INTEGER, message TEXT, at REAL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, actor TEXT, action TEXT, target TEXT, detail TEXT, at REAL);
"""
QUEUED, SUPERSEDED = deployment_pb2.QUEUED, deployment_pb2.SUPERSEDED


class Floor:
    def __init__(self, db: Path, token_sha256: str) -> None:
        self.token_sha256 = token_sha256
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.executescript(SCHEMA)
        self.committer = concurrent.futures.ThreadPoolExecutor(1, "floor-commit")
        self.batch: list[asyncio.Future[None]] | None = None  # the open batch's waiters
        self.committing: asyncio.Future[None] | None = None

    async def create(
        self, req: deployment_pb2.CreateDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployment_pb2.Deployment:
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                token = str(value).partition(" ")[2]
        if hashlib.sha256(token.encode()).hexdigest() != self.token_sha256:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        if not (req.service and req.environment and req.artifact):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service, environment, artifact")
        while self.committing is not None:  # the connection is the committer's meanwhile
            await asyncio.shield(self.committing)
        loop = asyncio.get_running_loop()
        if self.batch is None:
            self.conn.execute("BEGIN IMMEDIATE")
            self.batch = []
            loop.call_soon(self._commit)
        now = time.time()
        dep_id = "dep_" + uuid.uuid4().hex
        c = self.conn
        for (old,) in c.execute(
            "SELECT id FROM deployments WHERE service = ? AND environment = ? AND state = ?",
            (req.service, req.environment, QUEUED),
        ).fetchall():
            c.execute(
                "UPDATE deployments SET state = ?, updated_at = ? WHERE id = ?",
                (SUPERSEDED, now, old),
            )
            c.execute(
                "INSERT INTO events (deployment, state, message, at) VALUES (?, ?, ?, ?)",
                (old, SUPERSEDED, f"superseded by {dep_id}", now),
            )
        c.execute(
            "INSERT INTO deployments (id, service, environment, artifact, state, reason, "
            "created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dep_id,
                req.service,
                req.environment,
                req.artifact,
                QUEUED,
                req.reason,
                "bench",
                now,
                now,
            ),
        )
        c.execute(
            "INSERT INTO events (deployment, state, message, at) VALUES (?, ?, ?, ?)",
            (dep_id, QUEUED, "requested by bench", now),
        )
        c.execute(
            "INSERT INTO audit (actor, action, target, detail, at) VALUES (?, ?, ?, ?, ?)",
            (
                "bench",
                "deployment.create",
                dep_id,
                json.dumps({"service": req.service, "environment": req.environment}),
                now,
            ),
        )
        done = loop.create_future()
        self.batch.append(done)
        await done
        out = deployment_pb2.Deployment(
            id=dep_id,
            service=req.service,
            environment=req.environment,
            state=QUEUED,
            reason=req.reason,
            created_by="bench",
        )
        out.create_time.FromNanoseconds(int(now * 1e9))
        out.update_time.CopyFrom(out.create_time)
        return out

    def _commit(self) -> None:
        waiters, self.batch = self.batch or [], None
        loop = asyncio.get_running_loop()
        committing = self.committing = loop.create_future()
        job = self.committer.submit(self.conn.execute, "COMMIT")

        def finished(_: Any) -> None:
            self.committing = None
            committing.set_result(None)
            for w in waiters:
                if not w.done():
                    w.set_result(None)

        job.add_done_callback(lambda j: loop.call_soon_threadsafe(finished, j))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "sami.v1.DeploymentService",
            {
                "CreateDeployment": grpc.unary_unary_rpc_method_handler(
                    self.create,
                    request_deserializer=deployment_pb2.CreateDeploymentRequest.FromString,
                    response_serializer=deployment_pb2.Deployment.SerializeToString,
                )
            },
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    p.add_argument("--listen", required=True)
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--token-sha256", required=True)
    args = p.parse_args(argv)
    raise_fd_limit()
    asyncio.run(echo.serve(args.listen, Floor(args.db, args.token_sha256).handler()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
