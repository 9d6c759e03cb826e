"""sami-control: the control plane (see ARCHITECTURE.md)."""

from sami_common.logs import quiet_grpc_core

# Before anything imports grpc, whose C core reads its settings when it starts: its own
# lines on stderr would break the one-JSON-object-per-line logs (sami_common/logs.py).
quiet_grpc_core()
