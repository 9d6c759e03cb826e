"""A small valid deployments repo, in memory, that the tests break one way at a time."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "deployments"
DOCS = REPO_ROOT / "docs" / "manifests.md"

WEB = "services/web/swarm/stage"
JOBS = "services/jobs/cron/production"
SITE = "services/site/static_file/production"

# Line numbers matter: the tests expect problems on these lines.
WEB_MANIFEST = """\
version: v1beta
service_name: web
type: swarm
stack_files:
  - web-stack.yml
image_services:
  - web
converge_timeout: 5m
cluster: main
"""

WEB_STACK = """\
services:
  web:
    image: ghcr.io/example/web:latest
    healthcheck:
      test: ["CMD", "true"]
      interval: 10s
      retries: 3
    deploy:
      update_config:
        monitor: 30s
    configs:
      - source: web_conf
        target: /etc/web.conf
  redis:
    image: redis:7-alpine
configs:
  web_conf:
    file: ./conf/web.conf
"""

JOBS_MANIFEST = """\
version: v1beta
service_name: jobs
type: cron
cron:
  schedule: "*/15 * * * *"
  stack_files: [job.yml]
"""

JOBS_STACK = """\
services:
  cleanup:
    image: ghcr.io/example/jobs:latest
"""

SITE_MANIFEST = """\
version: v1beta
service_name: site
type: static_file
static_file:
  target_dir: /srv/www/site
"""


def base_files() -> dict[str, bytes]:
    return {
        "README.md": b"# deployments\n",
        "conf/nginx/sites-enabled/example.com": b"server {}\n",
        f"{WEB}/sami.yaml": WEB_MANIFEST.encode(),
        f"{WEB}/web-stack.yml": WEB_STACK.encode(),
        f"{WEB}/conf/web.conf": b"listen 8080\n",
        f"{JOBS}/sami.yaml": JOBS_MANIFEST.encode(),
        f"{JOBS}/job.yml": JOBS_STACK.encode(),
        f"{SITE}/sami.yaml": SITE_MANIFEST.encode(),
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# A YAML entity-expansion bomb: nine aliases of nine make 9**9 nodes from a few hundred bytes.
BILLION_LAUGHS = "\n".join(
    [
        "version: v1beta",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
    ]
)
