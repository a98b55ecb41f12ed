"""What gunicorn refuses at start, with one line naming the problem: a Redis too old for the store,
and --preload (which would build the app, its threads and its SQLite connections in the master)."""
from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import AUTH_TOKEN
from tests.servers import GUNICORN, ROOT, Gunicorn, free_port, gunicorn_setting, running, without_bridge_settings


class OldRedis(socketserver.StreamRequestHandler):
    """Enough of Redis 6.2's protocol for a client to say HELLO and ask INFO: every other command is OK."""

    def handle(self) -> None:
        while line := self.rfile.readline():
            if not line.startswith(b"*"):
                continue
            words = []
            for _ in range(int(line[1:])):
                self.rfile.readline()  # $length
                words.append(self.rfile.readline().strip().upper())
            if words and words[0] == b"HELLO":
                hello = {b"server": b"redis", b"version": b"6.2.14"}
                self.wfile.write(b"%%%d\r\n" % (len(hello) + 1) + b"".join(
                    b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v) for k, v in hello.items())
                    + b"$5\r\nproto\r\n:3\r\n")
            elif words and words[0] == b"INFO":
                info = b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"
                self.wfile.write(b"$%d\r\n%s\r\n" % (len(info), info))
            else:
                self.wfile.write(b"+OK\r\n")


@pytest.fixture
def old_redis() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), OldRedis)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"redis://:s3cret@127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


def start_gunicorn(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**without_bridge_settings(), "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path),
           "HOST": "127.0.0.1", "PORT": str(free_port()), "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4",
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}", **settings}
    return subprocess.run([str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), *args, "twilio_voice_server:app"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_a_redis_older_than_7_is_refused_with_one_line(old_redis: str, tmp_path: Path) -> None:
    result = start_gunicorn(tmp_path, STATE_URL=old_redis)
    assert result.returncode == 2
    shown = old_redis.replace(":s3cret@", ":***@")
    assert (f"twilio-bridge: configuration error: STATE_URL={shown}: Redis 6.2.14 is too old: "
            "the bridge needs Redis 7.0 or later (PEXPIRE … NX)") in result.stderr.splitlines()
    assert "s3cret" not in result.stdout + result.stderr


def test_preload_is_refused_before_the_app_exists(tmp_path: Path) -> None:
    result = start_gunicorn(tmp_path, "--preload")
    assert result.returncode != 0
    assert ("twilio-bridge: gunicorn --preload is not supported: the app starts threads and opens the state "
            "store in each worker (remove --preload / preload_app)") in result.stderr.splitlines()
    assert not (tmp_path / "state.db").exists()  # nothing opened in the master


@pytest.mark.parametrize("name, value", [("GUNICORN_WORKERS", "two"), ("GUNICORN_WORKERS", "²"),
                                         ("GUNICORN_THREADS", "0")])
def test_a_worker_or_thread_count_that_is_not_a_whole_number_is_refused_with_one_line(
        tmp_path: Path, name: str, value: str) -> None:
    result = start_gunicorn(tmp_path, **{name: value})
    assert result.returncode == 2
    assert f"twilio-bridge: configuration error: {name}={value}: a whole number, 1 or more" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr and not (tmp_path / "state.db").exists()


def test_the_workers_are_one_per_core_plus_one_unless_set(tmp_path: Path) -> None:
    def counts(cpus: set[int] | None = None, **settings: str) -> tuple[str, str]:
        env = {**without_bridge_settings(), **settings}
        return gunicorn_setting("workers", tmp_path, env, cpus), gunicorn_setting("threads", tmp_path, env, cpus)

    cores = len(os.sched_getaffinity(0))
    assert counts() == (f"{cores + 1}", "250")
    assert counts(GUNICORN_WORKERS="5", GUNICORN_THREADS="40") == ("5", "40")
    assert counts(cpus={0}) == ("2", "250")  # the cores it may run on, not the machine's


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_wait_that_is_not_a_finite_number_is_refused_with_one_line(tmp_path: Path, value: str) -> None:
    result = start_gunicorn(tmp_path, RASA_MAX_WAIT_SECONDS=value)
    assert result.returncode == 2
    assert (f"twilio-bridge: configuration error: RASA_MAX_WAIT_SECONDS={value!r}: must be a number of seconds "
            "above 0 and at most 120") in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_a_bad_log_level_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    result = start_gunicorn(tmp_path, LOG_LEVEL="verbose")
    assert result.returncode == 2
    assert ("twilio-bridge: configuration error: LOG_LEVEL='verbose': must be DEBUG, INFO, WARNING or ERROR"
            in result.stderr.splitlines())


@pytest.mark.parametrize("level", ["", " warning "])
def test_an_empty_or_padded_log_level_is_read_as_the_bridge_reads_it(tmp_path: Path, level: str) -> None:
    result = start_gunicorn(tmp_path, LOG_LEVEL=level, RASA_TIMEOUT="abc")  # a bad setting, so gunicorn stops
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert problems == ["twilio-bridge: configuration error: RASA_TIMEOUT='abc': is not a number"]


def test_a_bad_worker_count_and_bad_settings_are_reported_together(tmp_path: Path) -> None:
    result = start_gunicorn(tmp_path, GUNICORN_WORKERS="0", RASA_TIMEOUT="abc", FALLBACK_PHONE_NUMBER="5512345678")
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert problems == [
        "twilio-bridge: configuration error: GUNICORN_WORKERS=0: a whole number, 1 or more",
        "twilio-bridge: configuration error: RASA_TIMEOUT='abc': is not a number",
        "twilio-bridge: configuration error: FALLBACK_PHONE_NUMBER='5512345678': must be an E.164 number such as "
        "+5215512345678",
    ]


def test_a_port_that_is_not_a_number_is_refused_with_the_bridges_line(tmp_path: Path) -> None:
    result = start_gunicorn(tmp_path, PORT="http")
    assert result.returncode == 2
    assert "twilio-bridge: configuration error: PORT='http': is not a number" in result.stderr.splitlines()


def bridge_env(tmp_path: Path) -> dict[str, str]:
    return {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4", "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"}


@pytest.mark.parametrize("host", ["::1", "0:0:0:0:0:0:0:1"])
def test_an_ipv6_host_is_listened_on_and_named_in_the_banner(tmp_path: Path, host: str) -> None:
    server = Gunicorn(bridge_env(tmp_path), tmp_path, host=host)
    server.url = f"http://[::1]:{server.port}"
    with server:
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert f'"http://[::1]:{server.port}/webhook/twilio/voice' in server.log_path.read_text()


def test_gunicorn_bound_to_a_unix_socket_starts_and_names_it_in_the_banner(tmp_path: Path) -> None:
    socket_path = tmp_path / "bridge.sock"

    def health() -> bytes:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(socket_path))
            client.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return b"".join(iter(lambda: client.recv(65536), b""))

    env = {**without_bridge_settings(), "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp_path), **bridge_env(tmp_path)}
    command = [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "-b", f"unix:{socket_path}", "twilio_voice_server:app"]
    log = tmp_path / "gunicorn.log"
    with running(command, log, ready=lambda: health().startswith(b"HTTP/1.0 200"), cwd=tmp_path, env=env):
        pass
    assert "Traceback" not in log.read_text()
    assert f"http://unix:{socket_path}:/webhook/twilio/voice" in log.read_text()


def test_a_metrics_directory_that_cannot_be_made_is_refused_with_one_line_among_the_others(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    metrics = tmp_path / "a-file" / "metrics"
    result = start_gunicorn(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics), RASA_TIMEOUT="abc")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert problems == [f"twilio-bridge: configuration error: PROMETHEUS_MULTIPROC_DIR={metrics}: cannot be made "
                        "or written to (Not a directory)",
                        "twilio-bridge: configuration error: RASA_TIMEOUT='abc': is not a number"]
