"""SamiClient's calls of the small services, LockService (target locks, `sami lock`) and
CronService: a mixin of SamiClient (client.py), which provides `_call`, `_paged` and the
stubs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sami_client.pb import cron_pb2, lock_pb2, status_pb2

# Items per page of a List call (SamiClient's too).
DEFAULT_PAGE_SIZE = 100


class LockAndCronCalls:
    _locks: Any  # lock_pb2_grpc.LockServiceStub, on the client's channel
    _cron: Any  # cron_pb2_grpc.CronServiceStub
    _status: Any  # status_pb2_grpc.StatusServiceStub

    def _call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        raise NotImplementedError  # SamiClient's

    def _paged(self, method: Any, request: Any, items: str) -> Iterator[Any]:
        raise NotImplementedError  # SamiClient's

    # Target locks

    def create_lock(
        self, environment: str, service: str, reason: str, ttl_seconds: float = 0.0
    ) -> lock_pb2.Lock:
        """Lock `environment` (every service, when `service` is "") until unlocked, or for
        `ttl_seconds`."""
        lock: lock_pb2.Lock = self._call(
            self._locks.CreateLock,
            lock_pb2.CreateLockRequest(
                environment=environment, service=service, reason=reason, ttl_seconds=ttl_seconds
            ),
        )
        return lock

    def delete_lock(self, environment: str, service: str) -> lock_pb2.Lock:
        """Unlock (an admin breaks another's lock); returns the lock removed."""
        lock: lock_pb2.Lock = self._call(
            self._locks.DeleteLock,
            lock_pb2.DeleteLockRequest(environment=environment, service=service),
        )
        return lock

    def list_locks(self, environment: str = "", service: str = "") -> list[lock_pb2.Lock]:
        """The locks that hold now (of `environment`, covering `service`), oldest first."""
        response: lock_pb2.ListLocksResponse = self._call(
            self._locks.ListLocks,
            lock_pb2.ListLocksRequest(environment=environment, service=service),
        )
        return list(response.locks)

    # Live status

    def get_status(
        self, service: str = "", environment: str = ""
    ) -> list[status_pb2.ServiceStatus]:
        """What runs (of `service` / `environment`): one row per swarm service and target."""
        response: status_pb2.GetStatusResponse = self._call(
            self._status.GetStatus,
            status_pb2.GetStatusRequest(service=service, environment=environment),
        )
        return list(response.services)

    def list_drift_records(
        self, service: str, environment: str, pull_request: int = 0, limit: int = 0
    ) -> list[status_pb2.DriftRecord]:
        """The target's drift records, ongoing and past, newest first."""
        response: status_pb2.ListDriftRecordsResponse = self._call(
            self._status.ListDriftRecords,
            status_pb2.ListDriftRecordsRequest(
                service=service, environment=environment, pull_request=pull_request, limit=limit
            ),
        )
        return list(response.records)

    # Cron runs

    def list_cron_runs(
        self,
        *,
        service: str = "",
        environment: str = "",
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[cron_pb2.CronRun]:
        """Matching cron runs, most recently reported first, fetching pages as the caller
        iterates."""
        return self._paged(
            self._cron.ListCronRuns,
            cron_pb2.ListCronRunsRequest(
                service=service, environment=environment, page_size=page_size
            ),
            "runs",
        )
