"""Sample deployments repos and artifacts for tests (in memory: {repo path: bytes})."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

STACK = """\
services:
  {service}:
    image: 127.0.0.1:5000/{service}:latest
    command: ["sleep", "3600"]
    deploy:
      replicas: 1
"""

MANIFEST = """\
version: v1beta
service_name: {service}
type: swarm
stack_files:
  - stack.yml
converge_timeout: 60s
{extra}"""


def repo(
    services: Iterable[str] = ("web", "api"), *, pr_deploy: bool = True, stack: str = STACK
) -> dict[str, bytes]:
    files: dict[str, bytes] = {b"README.md".decode(): b"# deployments\n"}
    for svc in services:
        for env in ("stage", "production", "pull_request"):
            folder = f"services/{svc}/swarm/{env}"
            extra = (
                f"pr_deploy: {'true' if pr_deploy else 'false'}\n" if env == "pull_request" else ""
            )
            files[f"{folder}/sami.yaml"] = MANIFEST.format(service=svc, extra=extra).encode()
            files[f"{folder}/stack.yml"] = stack.format(service=svc).encode()
    return files


def write(files: dict[str, bytes], root: Path) -> Path:
    for path, data in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
