"""Processes the tests start for real: free ports, readiness by polling, always stopped."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# Settings the bridge reads; a test's process must not inherit them from whoever runs pytest.
BRIDGE_VARIABLES = (
    "PORT", "HOST", "RASA_WEBHOOK_URL", "RASA_TIMEOUT", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
    "TWILIO_VALIDATE_SIGNATURE", "TWILIO_WEBHOOK_SHARED_KEYS", "PUBLIC_BASE_URL", "TRUSTED_PROXIES",
    "FALLBACK_PHONE_NUMBER", "VOICE_LANGUAGE", "VOICE_NAME", "VOICE_GREETING", "VOICE_MAX_SILENCES",
    "TWILIO_WHATSAPP_FROM", "TWILIO_API_BASE_URL", "STATE_URL", "LOG_LEVEL", "GUNICORN_WORKERS", "GUNICORN_THREADS",
)


class ServerDidNotStart(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@contextmanager
def running(command: list[str], log: Path, ready: Callable[[], bool], cwd: Path | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command`, wait until `ready()` holds, and stop it whatever happens."""
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=cwd, env=dict(env) if env is not None else None,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _holds(ready):
            if process.poll() is not None:
                raise ServerDidNotStart(f"{command[0]} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise ServerDidNotStart(f"{command[0]} not ready after {timeout:g} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not _holds(condition):
        assert time.monotonic() < deadline, f"still not true after {seconds:g} s"
        time.sleep(0.1)


def _holds(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except (OSError, requests.RequestException):
        return False


@contextmanager
def gunicorn_bridge(workdir: Path, settings: Mapping[str, str], port: int | None = None,
                    timeout: float = 30.0) -> Iterator[str]:
    """The bridge under real gunicorn, started the README's way; yields its http://127.0.0.1:PORT origin.

    `settings` go into `workdir/twilio.env`, the file an operator fills in, and the process
    runs in `workdir` so it reads that file and no other.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    values = {"STATE_URL": f"sqlite:///{workdir / 'state.db'}", **settings,
              "HOST": "127.0.0.1", "PORT": str(port)}
    (workdir / "twilio.env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    env = {name: value for name, value in os.environ.items() if name not in BRIDGE_VARIABLES}
    env.update(PYTHONPATH=str(REPO), GUNICORN_WORKERS="1", GUNICORN_THREADS="8")
    command = [str(VENV_BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), "twilio_voice_server:app"]
    origin = f"http://127.0.0.1:{port}"
    with running(command, workdir / "gunicorn.log", cwd=workdir, env=env, timeout=timeout,
                 ready=lambda: requests.get(f"{origin}/health", timeout=2).status_code == 200):
        yield origin
