"""The generated API code (sami/v1, `make proto`) the control plane uses, imported here only.

Every other module of sami_control imports the *_pb2 modules from this one, so what the
control plane depends on in the generated code is this list, and a change to how the code
is generated touches one import. tests/test_boundaries.py keeps it so.
"""

from sami.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    artifact_pb2,
    artifact_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    cron_pb2,
    cron_pb2_grpc,
    deployment_pb2,
    deployment_pb2_grpc,
    lock_pb2,
    lock_pb2_grpc,
    manifest_pb2,
    manifest_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

__all__ = [
    "admin_pb2",
    "admin_pb2_grpc",
    "agent_pb2",
    "agent_pb2_grpc",
    "artifact_pb2",
    "artifact_pb2_grpc",
    "cluster_pb2",
    "cluster_pb2_grpc",
    "cron_pb2",
    "cron_pb2_grpc",
    "deployment_pb2",
    "deployment_pb2_grpc",
    "lock_pb2",
    "lock_pb2_grpc",
    "manifest_pb2",
    "manifest_pb2_grpc",
    "notify_pb2",
    "notify_pb2_grpc",
    "query_pb2",
    "query_pb2_grpc",
    "secret_pb2",
    "secret_pb2_grpc",
    "server_pb2",
    "server_pb2_grpc",
    "status_pb2",
    "status_pb2_grpc",
]
