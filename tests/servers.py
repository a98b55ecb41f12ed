"""Real servers for tests: gunicorn running the bridge, redis-server, and any command started until ready.
Each on a free port, stopped after."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
REPO = ROOT
# Settings the bridge reads; a test's process must not inherit them from whoever runs pytest.
BRIDGE_VARIABLES = (
    "PORT", "HOST", "RASA_WEBHOOK_URL", "RASA_TIMEOUT", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
    "TWILIO_VALIDATE_SIGNATURE", "TWILIO_WEBHOOK_SHARED_KEYS", "PUBLIC_BASE_URL", "TRUSTED_PROXIES",
    "FALLBACK_PHONE_NUMBER", "VOICE_LANGUAGE", "VOICE_NAME", "VOICE_GREETING", "VOICE_MAX_SILENCES",
    "TWILIO_WHATSAPP_FROM", "TWILIO_API_BASE_URL", "STATE_URL", "LOG_LEVEL", "GUNICORN_WORKERS", "GUNICORN_THREADS",
    "WHATSAPP_RATE_LIMIT", "WHATSAPP_RETRY_WINDOW", "WHATSAPP_WORKERS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered {url} within {seconds}s")


@contextmanager
def gunicorn(env: dict[str, str], workdir: Path, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen]]:
    """`gunicorn -c gunicorn.conf.py twilio_voice_server:app` with only the given settings."""
    server = Gunicorn({"GUNICORN_WORKERS": str(workers), **env}, workdir).start()
    try:
        assert server.process is not None
        yield server.url, server.process
    finally:
        server.kill(signal.SIGTERM)


def redis_binary() -> str | None:
    """redis-server, installed with apt-get when missing and we may (root, Debian)."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
                   capture_output=True, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("redis-server")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port; skips the test with the reason when there can be none."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed and could not be installed (needs root and apt-get)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


class ServerDidNotStart(AssertionError):
    pass


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
def gunicorn_bridge(workdir: Path, settings: Mapping[str, str], port: int | None = None) -> Iterator[str]:
    """The bridge under real gunicorn as an operator runs it; yields its http://127.0.0.1:PORT origin.

    `settings` go into `workdir/twilio.env`, the file an operator fills in, and gunicorn runs in
    `workdir` (the install directory's stand-in) so it reads that file and no other.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    server = Gunicorn({"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8"}, workdir, port)
    values = {"STATE_URL": f"sqlite:///{workdir / 'state.db'}", **settings}
    (workdir / "twilio.env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    server.start()
    try:
        yield server.url
    finally:
        server.kill(signal.SIGTERM)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One throwaway redis-server for the session; tests keep apart by key prefix."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


class Gunicorn:
    """The bridge under gunicorn in its own process group, configured by environment variables only,
    that a test can SIGKILL (master and workers at once) and start again on the same port."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = {name: value for name, value in os.environ.items() if name not in BRIDGE_VARIABLES}
        self.env.update(env, HOST="127.0.0.1", PORT=str(self.port), PYTHONPATH=str(ROOT),
                        XDG_RUNTIME_DIR=str(workdir))
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "twilio_voice_server:app"],
                cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(self.url + "/health", self.process)
        except RuntimeError:
            self.kill()
            raise
        return self

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the master and its workers at once; with SIGKILL nothing gets to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
