"""Rendering a stack's variables, secrets and configs (pure: no engine)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pyrage
import pytest
import yaml

from sami_agent.executor import SecretPayload, SecretRef
from sami_agent.executors.swarm_apply import JobError, override_document, plan
from sami_agent.executors.swarm_cron import cron_plan
from sami_agent.executors.swarm_objects import (
    FILE_VERSION,
    ObjectError,
    Rendered,
    render,
    with_rendering,
)
from sami_agent.keys import AgentKey, generate_key_file
from tests.swarm.test_swarm_apply import make_job

STACK = b"""\
version: "3.8"
services:
  web:
    image: app
    secrets: [db_password]
    configs:
      - source: nginx_conf
        target: /etc/nginx.conf
secrets:
  db_password:
    external: true
  hand_made:
    external: true
configs:
  nginx_conf:
    file: ./nginx.conf
"""


@pytest.fixture
def key(tmp_path: Path) -> AgentKey:
    return generate_key_file(str(tmp_path / "age-key.txt"))


def encrypt(value: bytes, recipient: str) -> bytes:
    return bytes(pyrage.encrypt(value, [pyrage.x25519.Recipient.from_str(recipient)]))


def hash8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def on_swarm(*names: str):  # type: ignore[no-untyped-def]
    return lambda kind, name: name in names


def secret_job(key: AgentKey, value: bytes = b"hunter2", **changes: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = {
        "files": {"stack.yml": STACK, "nginx.conf": b"worker_processes 1;\n"},
        "image_services": ("web",),
        "secrets": (SecretRef("db_password", 3),),
        "secret_payloads": (SecretPayload("db_password", 3, encrypt(value, key.recipient)),),
    }
    fields.update(changes)
    return make_job(**fields)


# -- variables -----------------------------------------------------------------------------


def test_variables_fill_the_stack_files_and_docker_finds_nothing_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGE_TAG", "from-the-agent")  # never used
    stack = b"""\
services:
  web:
    image: app
    ports:
      - 22:22
  redis:
    image: redis:${IMAGE_TAG}
    command: ["sh", "-c", "echo $$HOME ${GREETING:-hi}"]
    read_only: ${READ_ONLY}
    environment:
      PASSWORD: ${PASSWORD}
      COUNT: ${REPLICAS}
    deploy:
      replicas: ${REPLICAS}
"""
    job = make_job(
        files={"stack.yml": stack},
        image_services=("web",),
        variables={"IMAGE_TAG": "7.2", "PASSWORD": "pa$word", "REPLICAS": "2", "READ_ONLY": "yes"},
    )
    chosen = plan(job)
    written = chosen.files["stack.yml"].decode()
    redis = yaml.safe_load(written)["services"]["redis"]
    assert redis["image"] == "redis:7.2"
    # Literal `$` is `$$` for docker's own round, which thus sees no variable left.
    assert redis["command"][2] == "echo $$HOME hi"
    assert redis["environment"] == {"PASSWORD": "pa$$word", "COUNT": "2"}  # strings stay so
    # Where the docker CLI casts an interpolated value, it gets the cast value.
    assert redis["deploy"]["replicas"] == 2 and redis["read_only"] is True
    # A scalar without variables keeps its text: `22:22` is base 60 to PyYAML, a string to
    # docker's YAML parser, and must reach it as written.
    assert "- 22:22\n" in written
    assert "from-the-agent" not in written
    assert job.files["stack.yml"] == stack  # the job's own files are left alone


def test_a_value_the_cli_would_not_cast_fails_the_plan() -> None:
    stack = b"services:\n  web:\n    image: app\n    deploy:\n      replicas: ${N}\n"
    job = make_job(files={"stack.yml": stack}, image_services=("web",), variables={"N": "two"})
    with pytest.raises(JobError, match=r"stack.yml: services.web.deploy.replicas: 'two' is not"):
        plan(job)


def test_undefined_variables_fail_the_plan_naming_each_with_its_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGE_TAG", "from-the-agent")
    other = (
        b"services:\n  worker:\n    image: app\n"
        b"    environment:\n      - A=${DB_HOST:?the database}\n"
    )
    job = make_job(
        files={
            "stack.yml": b"services:\n  web:\n    image: app:${IMAGE_TAG}\n    user: $USER_ID\n",
            "more.yml": other,
        },
        stack_files=("stack.yml", "more.yml"),
        image_services=("web",),
    )
    with pytest.raises(JobError) as caught:
        plan(job)
    message = str(caught.value)
    assert "stack.yml: undefined variables: IMAGE_TAG, USER_ID" in message
    assert "more.yml: undefined variable: DB_HOST (the database)" in message
    assert "sami var set shop NAME=VALUE --env stage" in message


def test_a_stack_file_without_variables_is_written_unchanged() -> None:
    stack = b"# comment kept\nservices:\n  web:\n    image: app\n    command: echo $$1\n"
    chosen = plan(make_job(files={"stack.yml": stack}, image_services=("web",)))
    assert chosen.files["stack.yml"] == stack


def test_a_value_cannot_add_yaml_structure() -> None:
    stack = b"services:\n  web:\n    image: app\n    hostname: ${NAME}\n"
    job = make_job(
        files={"stack.yml": stack},
        image_services=("web",),
        variables={"NAME": "x\n    privileged: true"},
    )
    doc = yaml.safe_load(plan(job).files["stack.yml"])
    assert doc["services"]["web"] == {"image": "app", "hostname": "x\n    privileged: true"}


# -- secrets and configs -------------------------------------------------------------------


def test_secret_and_repo_config_are_versioned_by_content_in_the_override(key: AgentKey) -> None:
    job = secret_job(key)
    base = plan(job)
    rendered = render(base, job, key, on_swarm("hand_made"))
    secret, config = rendered.objects
    assert secret.swarm_name == f"shop_db_password_{hash8(b'hunter2')}"
    assert secret.data == b"hunter2"
    assert secret.labels("shop") == {
        "sami.stack": "shop",
        "sami.secret": "db_password",
        "sami.version": "3",
        "com.docker.stack.namespace": "shop",
    }
    assert config.swarm_name == f"shop_nginx_conf_{hash8(b'worker_processes 1;' + bytes([10]))}"
    assert config.version == FILE_VERSION
    doc = override_document(with_rendering(base, rendered))
    assert doc["secrets"] == {"db_password": {"external": True, "name": secret.swarm_name}}
    assert doc["configs"] == {"nginx_conf": {"external": True, "name": config.swarm_name}}
    # The hand-made external secret is used as the stack says.
    assert "hand_made" not in doc["secrets"]
    assert "hunter2" not in repr(rendered)  # the value never shows in a repr (logs)


def test_a_changed_value_or_file_gets_another_name(key: AgentKey) -> None:
    first = secret_job(key)
    second = secret_job(
        key,
        b"correct horse",
        files={"stack.yml": STACK, "nginx.conf": b"worker_processes 2;\n"},
    )
    names = [
        tuple(o.swarm_name for o in render(plan(j), j, key, on_swarm("hand_made")).objects)
        for j in (first, second)
    ]
    assert names[0][0] != names[1][0] and names[0][1] != names[1][1]


def test_compose_files_before_3_5_get_the_legacy_external_name(key: AgentKey) -> None:
    old = STACK.replace(b'"3.8"', b'"3.3"')
    job = secret_job(key, files={"stack.yml": old, "nginx.conf": b"x"})
    base = plan(job)
    doc = override_document(with_rendering(base, render(base, job, key, on_swarm("hand_made"))))
    assert doc["secrets"]["db_password"] == {
        "external": {"name": f"shop_db_password_{hash8(b'hunter2')}"}
    }


def test_the_secret_name_is_its_name_field_when_it_has_one(key: AgentKey) -> None:
    stack = STACK.replace(
        b"  db_password:\n    external: true\n",
        b"  db:\n    external: true\n    name: db_password\n",
    )
    stack = stack.replace(b"secrets: [db_password]", b"secrets: [db]")
    job = secret_job(key, files={"stack.yml": stack, "nginx.conf": b"x"})
    base = plan(job)
    rendered = render(base, job, key, on_swarm("hand_made"))
    doc = override_document(with_rendering(base, rendered))
    assert doc["secrets"] == {
        "db": {"external": True, "name": f"shop_db_password_{hash8(b'hunter2')}"}
    }


def test_a_payload_for_another_key_fails_naming_secret_version_recipient_and_remedy(
    key: AgentKey, tmp_path: Path
) -> None:
    other = generate_key_file(str(tmp_path / "other.txt"))
    job = secret_job(other)
    with pytest.raises(ObjectError) as caught:
        render(plan(job), job, key, on_swarm("hand_made"))
    message = str(caught.value)
    assert "secret db_password v3 cannot be decrypted" in message
    assert key.recipient in message
    assert "sami secret set shop db_password --env stage" in message
    assert "sami secret rekey" in message


def test_an_agent_without_a_key_cannot_open_secrets(key: AgentKey) -> None:
    job = secret_job(key)
    with pytest.raises(ObjectError, match="this agent has no key"):
        render(plan(job), job, None, on_swarm("hand_made"))


def test_an_external_secret_neither_set_nor_on_the_swarm_fails_naming_it(key: AgentKey) -> None:
    job = secret_job(key, secrets=(), secret_payloads=())
    with pytest.raises(ObjectError) as caught:
        render(plan(job), job, key, on_swarm("hand_made"))
    message = str(caught.value)
    assert "secret db_password (declared external in stack.yml) was not set" in message
    assert "sami secret set shop db_password --env stage" in message
    assert "hand_made" not in message
    # Made by hand on the swarm: used as the stack says, nothing to create.
    rendered = render(plan(job), job, key, on_swarm("hand_made", "db_password"))
    assert [o.kind for o in rendered.objects] == ["config"]


def test_a_recorded_version_without_its_ciphertext_fails(key: AgentKey) -> None:
    job = secret_job(key, secret_payloads=())
    with pytest.raises(ObjectError, match="uses version 3 but the assignment carries no"):
        render(plan(job), job, key, on_swarm("hand_made"))


def test_a_secret_set_but_not_declared_is_a_note(key: AgentKey) -> None:
    job = secret_job(
        key,
        secret_payloads=(
            SecretPayload("db_password", 3, encrypt(b"a", key.recipient)),
            SecretPayload("api_token", 1, encrypt(b"b", key.recipient)),
        ),
    )
    rendered = render(plan(job), job, key, on_swarm("hand_made"))
    assert rendered.notes == (
        "secret api_token v1 is set but no stack file declares it (`secrets: {NAME: {external:"
        " true}}`): not used",
    )


def test_a_plan_names_versions_from_the_swarm_without_decrypting(key: AgentKey) -> None:
    job = secret_job(key, secret_payloads=())  # a plan carries versions, no ciphertext

    def find(kind: str, stack: str, name: str, version: str) -> str:
        return "shop_db_password_0badc0de" if (name, version) == ("db_password", "3") else ""

    rendered = render(plan(job), job, None, on_swarm("hand_made"), find=find)
    assert rendered.objects[0].swarm_name == "shop_db_password_0badc0de"
    assert rendered.objects[0].data == b""
    rendered = render(plan(job), job, None, on_swarm("hand_made"), find=lambda *_: "")
    assert rendered.objects[0].swarm_name == "shop_db_password_v3"


def test_a_versioned_name_too_long_for_swarm_is_refused(key: AgentKey) -> None:
    job = secret_job(key, stack_name="s" * 60)
    with pytest.raises(ObjectError, match="not a valid Swarm name"):
        render(plan(job), job, key, on_swarm("hand_made"))


def test_a_config_outside_the_repo_is_left_as_the_stack_says(key: AgentKey) -> None:
    stack = STACK.replace(b"file: ./nginx.conf", b"file: /etc/host/nginx.conf")
    job = secret_job(key, files={"stack.yml": stack})
    rendered = render(plan(job), job, key, on_swarm("hand_made"))
    assert [o.kind for o in rendered.objects] == ["secret"]
    assert isinstance(rendered, Rendered)


def test_a_cron_job_reads_its_filled_stack_file() -> None:
    stack = b"""\
services:
  backup:
    image: app
    command: ["sh", "-c", "echo $$PATH"]
    deploy:
      replicas: ${RUNS}
"""
    job = make_job(
        deployment_type="cron",
        cron_schedule="30 2 * * *",
        files={"stack.yml": stack},
        image_services=("backup",),
        variables={"RUNS": "2"},
    )
    chosen, _ = cron_plan(job, since=0.0)
    labels = chosen.service_overrides["backup"]["deploy"]["labels"]
    assert labels["sami.cron-replicas"] == "2"
    with pytest.raises(JobError, match="undefined variable: RUNS"):
        cron_plan(dataclasses.replace(job, variables={}), since=0.0)
