"""LockService (target locks, `sami lock`): protobuf in, one core call, protobuf out."""

from __future__ import annotations

from typing import Any

from sami_control.api.auth import principal
from sami_control.api.convert import ts
from sami_control.api.pb import lock_pb2, lock_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.model import TargetLock


def lock_message(lock: TargetLock) -> lock_pb2.Lock:
    return lock_pb2.Lock(
        environment=lock.environment,
        service=lock.service,
        reason=lock.reason,
        holder=lock.holder,
        create_time=ts(lock.created_at),
        expire_time=ts(lock.expires_at),
    )


class LockServicer(Servicer, lock_pb2_grpc.LockServiceServicer):
    async def CreateLock(self, request: lock_pb2.CreateLockRequest, context: Any) -> lock_pb2.Lock:
        lock = await self.core.locks.lock(
            principal(), request.environment, request.service, request.reason, request.ttl_seconds
        )
        return lock_message(lock)

    async def DeleteLock(self, request: lock_pb2.DeleteLockRequest, context: Any) -> lock_pb2.Lock:
        lock = await self.core.locks.unlock(principal(), request.environment, request.service)
        return lock_message(lock)

    async def ListLocks(
        self, request: lock_pb2.ListLocksRequest, context: Any
    ) -> lock_pb2.ListLocksResponse:
        locks = await self.core.locks.list(principal(), request.environment, request.service)
        return lock_pb2.ListLocksResponse(locks=[lock_message(lk) for lk in locks])
