"""The generated API code (sami/v1, `make proto`) the agent uses, imported here only.

Every other module of sami_agent imports the *_pb2 modules from this one, so what the agent
depends on in the generated code is this list (the agent stream and the messages it
carries), and a change to how the code is generated touches one import.
tests/test_boundaries.py keeps it so.
"""

from sami.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    cron_pb2,
    deployment_pb2,
    query_pb2,
)

__all__ = [
    "agent_pb2",
    "agent_pb2_grpc",
    "cron_pb2",
    "deployment_pb2",
    "query_pb2",
]
