"""Servers the assistant's tests start for real: a free port, readiness by polling, always stopped."""

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerDidNotStart(AssertionError):
    pass


@contextmanager
def running(command: List[str], cwd: Path, env: Dict[str, str], log: Path,
            ready: Callable[[], bool], timeout: float = 30.0) -> Iterator[subprocess.Popen]:
    """Start `command`, wait until `ready()` is true, and terminate it whatever happens."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready):
            if process.poll() is not None:
                raise ServerDidNotStart(f"{command[:3]} exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise ServerDidNotStart(f"{command[:3]} not ready after {timeout:g} s:\n{log.read_text()}")
            time.sleep(0.25)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except requests.RequestException:
        return False


def action_server(project_dir: Path, port: int, env: Dict[str, str], log: Path) -> ContextManager[subprocess.Popen]:
    """`python -m rasa_sdk --actions actions` from rasa_project/, ready when /health says ok."""
    return running(
        [sys.executable, "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
        cwd=project_dir, env=env, log=log,
        ready=lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json() == {"status": "ok"},
    )
