"""Servers the tests start for real, for any test module: Redis, and the bridge under gunicorn.

`redis_url` installs redis-server with apt-get when it is missing and the tests run as root, starts it
on a free port in a temporary directory, and skips (saying why) only when that is impossible.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def find_redis_server() -> str | None:
    found = shutil.which("redis-server") or next(
        (p for p in ("/usr/sbin/redis-server", "/usr/bin/redis-server") if os.access(p, os.X_OK)), None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(install, env=env, capture_output=True, timeout=300)
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/sbin/redis-server", "/usr/bin/redis-server") if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port, with append-only persistence in a temporary directory."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed and could not be installed (needs root and apt-get)")
    workdir = tempfile.mkdtemp(prefix="bridge-redis-")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: _redis_answers(port), timeout=10):
            pytest.skip(f"redis-server ({binary}) did not start on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py twilio_voice_server:app` in its own process group, configured by env."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "gunicorn.log"

    def start(self, timeout: float = 20.0) -> Gunicorn:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--pythonpath", str(ROOT),
                 "twilio_voice_server:app"],
                cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_until(self._healthy, timeout, interval=0.1):
            self.kill()
            raise AssertionError(f"gunicorn did not answer /health within {timeout:g}s:\n{self.log.read_text()[-3000:]}")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the master and its workers at once (SIGKILL: nothing gets to clean up)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)
            self.process.wait(timeout=30)
        self.process = None
