"""The domain core: the deployment state machine, leases, authorization and validation.

Imports no grpc: servicers in sami_control.api adapt it to the wire.
"""
