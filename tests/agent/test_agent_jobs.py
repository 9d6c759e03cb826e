"""An Assignment becomes a Job carrying everything the executor needs."""

from __future__ import annotations

from sami.v1 import agent_pb2, deployment_pb2, secret_pb2
from sami_agent.executor import SecretPayload, SecretRef
from sami_agent.jobs import job_from_assignment


def test_the_job_carries_secret_versions_ciphertexts_and_variables() -> None:
    deployment = deployment_pb2.Deployment(
        id="d1",
        service="shop",
        environment="stage",
        stack_name="stage_shop",
        secrets=[secret_pb2.SecretRef(name="db_password", version=3)],
        variables={"IMAGE_TAG": "1.2", "EMPTY": ""},
    )
    job = job_from_assignment(
        agent_pb2.Assignment(
            lease_id="l1",
            deployment=deployment,
            secrets=[secret_pb2.SecretPayload(name="db_password", version=3, ciphertext=b"age...")],
        )
    )
    assert job.secrets == (SecretRef("db_password", 3),)
    assert job.secret_payloads == (SecretPayload("db_password", 3, b"age..."),)
    assert dict(job.variables) == {"IMAGE_TAG": "1.2", "EMPTY": ""}
    assert "age..." not in repr(job.secret_payloads)  # ciphertexts stay out of logs


def test_an_assignment_without_secrets_gives_an_empty_job_side() -> None:
    job = job_from_assignment(agent_pb2.Assignment(lease_id="l1"))
    assert (job.secrets, job.secret_payloads, dict(job.variables)) == ((), (), {})
