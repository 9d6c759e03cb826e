"""Logs a shipper can read: with JSON logs, every line sami-control and sami-agent write is
one JSON object, whatever writes it (Sami, the `logging` module, an uncaught exception,
gRPC's C core); an unknown SAMI_LOG_LEVEL is refused with the valid values."""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PY, base_env

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = base_env()
    environ.pop("GRPC_VERBOSITY", None)  # the test run's own, if any
    environ.update({"SAMI_LOG_FORMAT": "json", "SAMI_LOG_LEVEL": "info", **env})
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [PY, *argv], capture_output=True, text=True, env=environ, timeout=60, check=False
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        assert line.startswith("{"), f"not a JSON log line: {line[:300]}"
    return [json.loads(line) for line in lines]


def test_a_port_in_use_is_one_json_line_not_the_grpc_core_s_text(tmp_path: Path) -> None:
    """gRPC's C core would write `E1202 … add_port.cc:83] Failed to add port …` itself."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"127.0.0.1:{port}"
        done = run(["-m", "sami_control", "serve", "--listen", listen, "--data", str(tmp_path)])
    assert done.returncode == 2
    (line,) = json_lines(done.stderr)
    assert line["event"] == "listen_refused" and line["level"] == "error"
    assert f"could not listen on 127.0.0.1:{port}" in line["message"]


@pytest.mark.parametrize("program", ["sami_control", "sami_agent"])
def test_an_unknown_log_level_is_refused_with_the_valid_values(program: str) -> None:
    done = run(["-m", program], SAMI_LOG_LEVEL="verbose", SAMI_TOKEN="x")
    assert done.returncode == 2
    name = program.replace("_", "-")
    assert done.stderr == (
        f"{name}: SAMI_LOG_LEVEL='verbose' is not a log level: use one of debug, info, "
        "warning, error\n"
    )


def test_what_python_itself_would_print_is_logged_as_json() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, threading, warnings
        import sami_control  # as the program does, before grpc
        from sami_common import logs

        logs.configure()
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)

        def fail():
            raise ValueError("in a thread")

        thread = threading.Thread(target=fail, name="worker")
        thread.start()
        thread.join()

        class Closing:
            def __del__(self):
                raise OSError("while closing")

        Closing()
        raise RuntimeError("nobody caught this")
        """
    )
    done = run(["-W", "always", "-c", script])
    assert done.returncode == 1
    lines = json_lines(done.stderr)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert line["timestamp"] and line["level"], line
        by_event.setdefault(line["event"], []).append(line)
    library = by_event["python_log"]
    assert {"logger": "asyncio", "message": "Task exception was never retrieved"}.items() <= (
        library[0].items()
    )
    assert any("something is deprecated" in line["message"] for line in library)
    thread, main = by_event["uncaught_exception"]
    assert thread["thread"] == "worker" and "ValueError: in a thread" in thread["exception"]
    assert main["level"] == "critical"
    assert (
        "Traceback" in main["exception"]
        and "RuntimeError: nobody caught this" in (main["exception"])
    )
    (unraisable,) = by_event["unraisable_exception"]
    assert "OSError: while closing" in unraisable["exception"]


def test_grpc_verbosity_set_by_the_operator_is_kept() -> None:
    done = run(["-c", "import sami_control, os; print(os.environ['GRPC_VERBOSITY'])"])
    assert done.stdout == "NONE\n"
    debug = run(
        ["-c", "import sami_control, os; print(os.environ['GRPC_VERBOSITY'])"],
        GRPC_VERBOSITY="debug",
    )
    assert debug.stdout == "debug\n"
