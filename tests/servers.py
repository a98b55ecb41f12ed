"""Real servers for tests (and the benchmarks): gunicorn running the bridge, redis-server, and any command
started until ready. Each on a free port, stopped after."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from twilio_bridge.config import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
# Settings the bridge and gunicorn.conf.py read; a test's process must not inherit them from whoever runs pytest.
BRIDGE_VARIABLES = (
    *(name for name, _, _ in VARIABLES), "GUNICORN_WORKERS", "GUNICORN_THREADS", "TWILIO_ENV_FILE",
    "TWILIO_BRIDGE_FROM_ENV_FILE", "TWILIO_BRIDGE_GUNICORN_LOADING",
)


PORTS_FROM = 10_000  # the ports tests choose from, up to the ephemeral range: above the well-known servers'
STOP_GRACE = 15.0  # seconds a stopped server and its children get between SIGTERM and SIGKILL


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` ports free now, all different, chosen below the kernel's ephemeral range. A port from that
    range (what binding port 0 gives) can be taken between its choice and the server's own bind as the
    local end of any outgoing connection, a test's own requests included, and the server then fails to
    start. Each port is held until the last is chosen, so two in one call never come back the same."""
    first_ephemeral = _first_ephemeral_port()
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind(("", random.randrange(PORTS_FROM, first_ephemeral)))  # every address, as some servers bind
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def answers(url: str) -> bool:
    """Any HTTP answer at all (a 503 included): the server is up."""
    requests.get(url, timeout=1)
    return True


def without_bridge_settings() -> dict[str, str]:
    """This process's environment minus every setting the bridge reads."""
    return {name: value for name, value in os.environ.items() if name not in BRIDGE_VARIABLES}


def gunicorn_setting(name: str, workdir: Path, env: Mapping[str, str] | None = None, cpus: set[int] | None = None,
                     conf: Path = ROOT / "gunicorn.conf.py") -> str:
    """What `conf` sets `name` to, read as gunicorn reads it: run in a fresh interpreter in `workdir`, with `env`
    (by default this environment minus the bridge's settings), on `cpus` when given."""
    read = f"import runpy; print(runpy.run_path({str(conf)!r})[{name!r}])"
    return subprocess.run([sys.executable, "-c", read], cwd=workdir, capture_output=True, text=True, check=True,
                          env=dict(env) if env is not None else without_bridge_settings(), timeout=60,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None).stdout.strip()


def wait_for(condition: Callable[[], object], seconds: float = 10.0, process: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Poll until `condition()` holds (connection errors count as not yet); fail at once if `process`
    exits first, showing the end of `log`."""
    deadline = time.monotonic() + seconds
    while not _holds(condition):
        tail = f":\n{log.read_text()[-4000:]}" if log is not None and log.exists() else ""
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode}{tail}")
        assert time.monotonic() < deadline, f"still not true after {seconds:g} s{tail}"
        time.sleep(0.1)


def _holds(ready: Callable[[], object]) -> object:
    try:
        return ready()
    except (OSError, requests.RequestException):
        return False


@contextmanager
def running(command: list[str], log: Path, ready: Callable[[], bool], cwd: Path | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 30.0,
            grace: float = STOP_GRACE) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` in a process group of its own, wait until `ready()` holds, and stop it and its
    children (a server's workers) whatever happens: SIGTERM, then SIGKILL after `grace` seconds."""
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=cwd, env=dict(env) if env is not None else None,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(ready, timeout, process, log)
        yield process
    finally:
        stop_group(process, grace)


def stop_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE, signum: int = signal.SIGTERM) -> None:
    """`signum` to the process's group, SIGKILL to whatever is left of it after `grace` seconds in all
    (children outlive a leader that exits first, or ignore SIGTERM), and the group is gone on return."""
    deadline = time.monotonic() + grace
    _signal_group(process.pid, signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    while group_alive(process.pid) and time.monotonic() < deadline:  # children still shutting down
        time.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()
    while group_alive(process.pid):  # SIGKILLed children are gone once init has reaped them
        time.sleep(0.01)


def group_alive(group: int) -> bool:
    """Is any process (a zombie included) left in the process group?"""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


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
def redis_server(workdir: Path, port: int | None = None, bind: Sequence[str] = ("127.0.0.1",),
                 durable: bool = False) -> Iterator[str]:
    """A throwaway redis-server on a free port (or `port`), listening on `bind`; skips the test with the
    reason when there can be none. `durable` keeps an append-only file in `workdir`, as an operator's
    Redis for the queue does, so a restart on the same port and `workdir` finds the data again."""
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed and could not be installed (needs root and apt-get)")
    port = port or free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    with running([binary, "--port", str(port), "--bind", *bind, "--protected-mode", "no", "--save", "",
                  *persistence, "--dir", str(workdir)], workdir / f"redis-{port}.log",
                 ready=lambda: port_open(port), timeout=10):
        yield f"redis://{bind[0]}:{port}/0"


@contextmanager
def gunicorn_bridge(workdir: Path, settings: Mapping[str, str], port: int | None = None) -> Iterator[str]:
    """The bridge under real gunicorn as an operator runs it; yields its http://127.0.0.1:PORT origin.

    `settings` go into `workdir/twilio.env`, the file an operator fills in, and gunicorn runs in
    `workdir` (the install directory's stand-in) so it reads that file and no other.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    values = {"STATE_URL": f"sqlite:///{workdir / 'state.db'}", **settings}
    (workdir / "twilio.env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    with Gunicorn({"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8"}, workdir, port) as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One throwaway redis-server for the session; tests keep apart by key prefix."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py twilio_voice_server:app` in its own process group, configured by `env`
    (over this process's environment minus the bridge's settings), that a test can SIGKILL (master and
    workers at once) and start again on the same port. As a context manager: started, then stopped with SIGTERM.
    `args` go on gunicorn's command line after the config file; `cpus` pins master and workers.
    `host` is the address it listens on, and `netns` the network namespace it runs in (tests/hosts.py)."""

    def __init__(self, env: Mapping[str, str], workdir: Path, port: int | None = None, *,
                 args: Sequence[str] = (), cpus: set[int] | None = None, host: str = "127.0.0.1",
                 netns: str | None = None):
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.workdir = workdir
        self.env = {**without_bridge_settings(), "PYTHONPATH": str(ROOT),
                    "XDG_RUNTIME_DIR": str(workdir),  # gunicorn's control socket, apart from other instances'
                    **env, "HOST": host, "PORT": str(self.port)}
        inside = ["ip", "netns", "exec", netns] if netns else []  # execs gunicorn: the pid stays the master's
        self.command = [*inside, str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), *args, "twilio_voice_server:app"]
        self.cpus = cpus
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None)
        try:
            wait_for(lambda: answers(self.url + "/health"), 30, self.process, self.log_path)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Signal the master and its workers at once; with SIGKILL nothing gets to clean up. Whatever is
        left of the group (a worker the master did not reap) is SIGKILLed after gunicorn's grace period."""
        if self.process is not None:
            stop_group(self.process, grace=40, signum=signum)
        self.process = None

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill(signal.SIGTERM)
