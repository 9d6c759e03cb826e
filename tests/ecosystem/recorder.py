"""A stand-in `sami` for runs of the action and the example workflows that need no server:
it records its arguments (and which connection variables it saw) and, under GitHub Actions,
writes the step outputs the real CLI would write."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, os, sys
argv = sys.argv[1:]
record = {{
    "argv": argv,
    "addr": os.environ.get("SAMI_ADDR", ""),
    "ca": os.environ.get("SAMI_CA", ""),
    "token": bool(os.environ.get("SAMI_TOKEN")),
    "client_cert": os.environ.get("SAMI_CLIENT_CERT", ""),
    "client_key": os.environ.get("SAMI_CLIENT_KEY", ""),
}}
with open(os.environ["SAMI_RECORD"], "a") as f:
    f.write(json.dumps(record) + "\\n")
outputs = {{}}
words = [a for a in argv if not a.startswith("-")]
if words[:2] == ["artifact", "register"]:
    outputs = {{"artifact_id": "a-recorded", "digest": "sha256:" + "0" * 64}}
elif words[:1] in (["deploy"], ["teardown"], ["promote"], ["rollback"]):
    outputs = {{"deployment_id": "d-recorded", "digest": "sha256:" + "0" * 64}}
elif words[:2] == ["manifests", "sync"]:
    outputs = {{"manifest_revision": "r" * 64}}
if os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("GITHUB_OUTPUT"):
    with open(os.environ["GITHUB_OUTPUT"], "a") as f:
        f.writelines(f"{{k}}={{v}}\\n" for k, v in outputs.items())
sys.exit(int(os.environ.get("SAMI_RECORD_EXIT", "0")))
"""


def install(folder: Path) -> Path:
    """Write `sami` (and `python`, which the action's `run` command uses to split `args`)
    into `folder`; returns the path of `sami`."""
    folder.mkdir(parents=True, exist_ok=True)
    sami = folder / "sami"
    sami.write_text(SCRIPT.format(python=sys.executable))
    sami.chmod(0o755)
    python = folder / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    return sami


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
