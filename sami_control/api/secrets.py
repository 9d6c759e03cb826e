"""SecretService (`sami secret`, `sami var`, `sami cluster recipient`): protobuf in, one
core call, protobuf out. Ciphertexts go out only in ExportSecrets (and, to agents, in their
assignments): every other answer names secrets, never their content."""

from __future__ import annotations

from typing import Any

from sami_control.api.auth import principal
from sami_control.api.convert import ts
from sami_control.api.pb import secret_pb2, secret_pb2_grpc
from sami_control.api.rpc import Servicer
from sami_control.core.model import Recipient, Variable
from sami_control.core.secrets import ListedSecret


def secret_message(s: ListedSecret) -> secret_pb2.Secret:
    v = s.version
    return secret_pb2.Secret(
        service=v.service,
        environment=v.environment,
        name=v.name,
        version=v.version,
        set_by=v.set_by,
        set_time=ts(v.set_at),
        recipients=sorted(v.recipients),
        stale_recipients=s.stale_recipients,
        removed=v.removed,
    )


def variable_message(v: Variable) -> secret_pb2.Variable:
    return secret_pb2.Variable(
        service=v.service,
        environment=v.environment,
        name=v.name,
        value=v.value,
        set_by=v.set_by,
        set_time=ts(v.set_at),
    )


def recipient_message(r: Recipient) -> secret_pb2.Recipient:
    return secret_pb2.Recipient(
        cluster=r.cluster,
        recipient=r.recipient,
        agent_id=r.agent_id,
        added_by=r.added_by,
        add_time=ts(r.added_at),
        last_seen_time=ts(r.last_seen_at),
        label=r.label,
    )


class SecretServicer(Servicer, secret_pb2_grpc.SecretServiceServicer):
    async def GetRecipients(
        self, request: secret_pb2.GetRecipientsRequest, context: Any
    ) -> secret_pb2.GetRecipientsResponse:
        got = await self.core.secrets.get_recipients(
            principal(), request.service, request.environment
        )
        return secret_pb2.GetRecipientsResponse(
            cluster=got.cluster, recipients=got.recipients, recipients_digest=got.digest
        )

    async def SetSecret(
        self, request: secret_pb2.SetSecretRequest, context: Any
    ) -> secret_pb2.Secret:
        stored = await self.core.secrets.set(
            principal(),
            request.service,
            request.environment,
            request.name,
            request.ciphertext,
            request.recipients_digest,
            request.rekey,
        )
        return secret_message(stored)

    async def ListSecrets(
        self, request: secret_pb2.ListSecretsRequest, context: Any
    ) -> secret_pb2.ListSecretsResponse:
        found = await self.core.secrets.list(principal(), request.service, request.environment)
        return secret_pb2.ListSecretsResponse(secrets=[secret_message(s) for s in found])

    async def RemoveSecret(
        self, request: secret_pb2.RemoveSecretRequest, context: Any
    ) -> secret_pb2.Secret:
        removed = await self.core.secrets.remove(
            principal(), request.service, request.environment, request.name
        )
        return secret_message(removed)

    async def ExportSecrets(
        self, request: secret_pb2.ExportSecretsRequest, context: Any
    ) -> secret_pb2.ExportSecretsResponse:
        found = await self.core.secrets.export(principal(), request.service, request.environment)
        return secret_pb2.ExportSecretsResponse(
            secrets=[
                secret_pb2.SecretPayload(name=v.name, version=v.version, ciphertext=v.ciphertext)
                for v in found
            ]
        )

    async def SetVariable(
        self, request: secret_pb2.SetVariableRequest, context: Any
    ) -> secret_pb2.Variable:
        v = await self.core.variables.set(
            principal(), request.service, request.environment, request.name, request.value
        )
        return variable_message(v)

    async def ListVariables(
        self, request: secret_pb2.ListVariablesRequest, context: Any
    ) -> secret_pb2.ListVariablesResponse:
        found = await self.core.variables.list(principal(), request.service, request.environment)
        return secret_pb2.ListVariablesResponse(variables=[variable_message(v) for v in found])

    async def RemoveVariable(
        self, request: secret_pb2.RemoveVariableRequest, context: Any
    ) -> secret_pb2.Variable:
        v = await self.core.variables.remove(
            principal(), request.service, request.environment, request.name
        )
        return variable_message(v)

    async def ListRecipients(
        self, request: secret_pb2.ListRecipientsRequest, context: Any
    ) -> secret_pb2.ListRecipientsResponse:
        found = await self.core.recipients.list(principal(), request.cluster)
        return secret_pb2.ListRecipientsResponse(recipients=[recipient_message(r) for r in found])

    async def AddRecipient(
        self, request: secret_pb2.AddRecipientRequest, context: Any
    ) -> secret_pb2.Recipient:
        r = await self.core.recipients.add(
            principal(), request.cluster, request.recipient, request.label
        )
        return recipient_message(r)

    async def RemoveRecipient(
        self, request: secret_pb2.RemoveRecipientRequest, context: Any
    ) -> secret_pb2.Recipient:
        r = await self.core.recipients.remove(principal(), request.cluster, request.recipient)
        return recipient_message(r)
