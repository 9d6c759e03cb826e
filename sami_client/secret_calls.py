"""SamiClient's calls of SecretService (`sami secret`, `sami var`, `sami cluster
recipient`): a mixin of SamiClient (client.py), which provides `_call` and the stub. The
client sends ciphertexts only: encrypting is sami_client/sealing.py's, before a call."""

from __future__ import annotations

from typing import Any

from sami_client.pb import secret_pb2


class SecretCalls:
    _secrets: Any  # secret_pb2_grpc.SecretServiceStub, on the client's channel

    def _call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        raise NotImplementedError  # SamiClient's

    def get_recipients(self, service: str, environment: str) -> secret_pb2.GetRecipientsResponse:
        resp: secret_pb2.GetRecipientsResponse = self._call(
            self._secrets.GetRecipients,
            secret_pb2.GetRecipientsRequest(service=service, environment=environment),
        )
        return resp

    def set_secret(
        self,
        service: str,
        environment: str,
        name: str,
        ciphertext: bytes,
        recipients_digest: str,
        *,
        rekey: bool = False,
    ) -> secret_pb2.Secret:
        secret: secret_pb2.Secret = self._call(
            self._secrets.SetSecret,
            secret_pb2.SetSecretRequest(
                service=service,
                environment=environment,
                name=name,
                ciphertext=ciphertext,
                recipients_digest=recipients_digest,
                rekey=rekey,
            ),
        )
        return secret

    def list_secrets(self, service: str = "", environment: str = "") -> list[secret_pb2.Secret]:
        resp = self._call(
            self._secrets.ListSecrets,
            secret_pb2.ListSecretsRequest(service=service, environment=environment),
        )
        return list(resp.secrets)

    def remove_secret(self, service: str, environment: str, name: str) -> secret_pb2.Secret:
        secret: secret_pb2.Secret = self._call(
            self._secrets.RemoveSecret,
            secret_pb2.RemoveSecretRequest(service=service, environment=environment, name=name),
        )
        return secret

    def export_secrets(self, service: str, environment: str) -> list[secret_pb2.SecretPayload]:
        resp = self._call(
            self._secrets.ExportSecrets,
            secret_pb2.ExportSecretsRequest(service=service, environment=environment),
        )
        return list(resp.secrets)

    def set_variable(
        self, service: str, environment: str, name: str, value: str
    ) -> secret_pb2.Variable:
        var: secret_pb2.Variable = self._call(
            self._secrets.SetVariable,
            secret_pb2.SetVariableRequest(
                service=service, environment=environment, name=name, value=value
            ),
        )
        return var

    def list_variables(self, service: str = "", environment: str = "") -> list[secret_pb2.Variable]:
        resp = self._call(
            self._secrets.ListVariables,
            secret_pb2.ListVariablesRequest(service=service, environment=environment),
        )
        return list(resp.variables)

    def remove_variable(self, service: str, environment: str, name: str) -> secret_pb2.Variable:
        var: secret_pb2.Variable = self._call(
            self._secrets.RemoveVariable,
            secret_pb2.RemoveVariableRequest(service=service, environment=environment, name=name),
        )
        return var

    def list_recipients(self, cluster: str = "") -> list[secret_pb2.Recipient]:
        resp = self._call(
            self._secrets.ListRecipients, secret_pb2.ListRecipientsRequest(cluster=cluster)
        )
        return list(resp.recipients)

    def add_recipient(self, cluster: str, recipient: str, label: str = "") -> secret_pb2.Recipient:
        r: secret_pb2.Recipient = self._call(
            self._secrets.AddRecipient,
            secret_pb2.AddRecipientRequest(cluster=cluster, recipient=recipient, label=label),
        )
        return r

    def remove_recipient(self, cluster: str, recipient: str) -> secret_pb2.Recipient:
        r: secret_pb2.Recipient = self._call(
            self._secrets.RemoveRecipient,
            secret_pb2.RemoveRecipientRequest(cluster=cluster, recipient=recipient),
        )
        return r
