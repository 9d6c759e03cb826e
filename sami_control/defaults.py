"""Defaults the command line shows before anything heavy is imported: `sami-control token
create` and friends must not pay for importing the gRPC server they never start."""

DEFAULT_LISTEN = "127.0.0.1:7443"
