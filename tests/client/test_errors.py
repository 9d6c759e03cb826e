"""SamiError: one error type whose exit status tells CI what kind of failure it was."""

from __future__ import annotations

import grpc
import pytest

from sami_client.client import SamiClient
from sami_client.errors import SamiError
from sami_common.dial import Endpoint

from .fake_control import ADMIN_TOKEN, FakeServer


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 2),
        (grpc.StatusCode.PERMISSION_DENIED, 2),
        (grpc.StatusCode.NOT_FOUND, 2),
        (grpc.StatusCode.ALREADY_EXISTS, 2),
        (grpc.StatusCode.FAILED_PRECONDITION, 2),
        (grpc.StatusCode.UNAVAILABLE, 3),
        (grpc.StatusCode.UNAUTHENTICATED, 3),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 3),
        (grpc.StatusCode.INTERNAL, 3),
    ],
)
def test_exit_codes(code: grpc.StatusCode, exit_code: int) -> None:
    assert SamiError(code, "x").exit_code == exit_code


def test_rpc_errors_become_sami_errors_with_field_violations(server: FakeServer) -> None:
    with (
        SamiClient(Endpoint(addr=server.addr, token=ADMIN_TOKEN)) as client,
        pytest.raises(SamiError) as caught,
    ):
        client.create_deployment("Web", "staging", "x")
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "invalid deployment"
    assert [f for f, _ in err.field_violations] == ["service", "environment"]
    assert isinstance(err.__cause__, grpc.RpcError)
