"""gRPC adapters: thin servicers over sami_control.core, the auth interceptor, and the one
place where domain errors become gRPC statuses."""
