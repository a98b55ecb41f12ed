"""A reload (HUP, `systemctl reload`) after twilio.env was edited wrongly: gunicorn says which settings are bad
and goes on serving with the ones it had, instead of retiring its workers for new ones that cannot start."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import AUTH_TOKEN
from tests.servers import Gunicorn, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent


def alive_workers(server: Gunicorn) -> set[str]:
    log = server.log_path.read_text()
    booted = set(re.findall(r"Booting worker with pid: (\d+)", log))
    return booted - set(re.findall(r"Worker exiting \(pid: (\d+)\)", log))


def test_a_reload_with_bad_settings_keeps_serving_with_the_ones_it_had(tmp_path: Path) -> None:
    env_file = tmp_path / "twilio.env"
    state = f"STATE_URL=sqlite:///{tmp_path / 'state.db'}\n"
    env_file.write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nRASA_TIMEOUT=5\n{state}")
    with Gunicorn({"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4"}, tmp_path) as server:
        def config() -> dict:
            return requests.get(server.url + "/health", timeout=5).json()["config"]

        assert config()["rasa_timeout"] == 5.0
        wait_for(lambda: alive_workers(server), 20, server.process, server.log_path)
        old = alive_workers(server)
        env_file.write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nRASA_TIMEOUT=five\nVOICE_MODE=relai\n"
                            f"VOICE_LANGUAGE=en-US\n{state}")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "twilio-bridge: reload refused" in server.log_path.read_text(), 20, server.process,
                 server.log_path)
        wait_for(lambda: alive_workers(server) and not alive_workers(server) & old, 20, server.process,
                 server.log_path)  # the old worker retired, its successor booted
        assert (config()["rasa_timeout"], config()["voice_mode"], config()["voice_language"]) == (5.0, "gather", "es-MX")

        env_file.write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nRASA_TIMEOUT=6\nVOICE_LANGUAGE=en-US\n{state}")  # fixed
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: config()["rasa_timeout"] == 6.0, 20, server.process, server.log_path)
        assert config()["voice_language"] == "en-US"  # a name the bad file added is read once the file is good
    log = server.log_path.read_text().splitlines()
    assert "twilio-bridge: configuration error: RASA_TIMEOUT='five': is not a number" in log
    assert "twilio-bridge: configuration error: VOICE_MODE='relai': must be gather or relay" in log
    assert not [line for line in log if "exited with code" in line]  # no worker failed to start


def test_a_reload_with_a_bad_port_keeps_listening_where_it_did(tmp_path: Path) -> None:
    env_file = tmp_path / "twilio.env"
    env_file.write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nSTATE_URL=sqlite:///{tmp_path / 'state.db'}\n")
    server = Gunicorn({"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4"}, tmp_path)
    del server.env["PORT"]  # the port comes from twilio.env, as an operator's does
    with open(env_file, "a") as settings:
        settings.write(f"PORT={server.port}\n")
    with server:
        old = alive_workers(server)
        env_file.write_text(env_file.read_text().replace(f"PORT={server.port}", "PORT=50O1"))
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: alive_workers(server) and not alive_workers(server) & old, 20, server.process,
                 server.log_path)
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
    log = server.log_path.read_text().splitlines()
    assert "twilio-bridge: configuration error: PORT='50O1': is not a number" in log


def test_a_reload_with_a_bad_worker_count_is_refused_and_keeps_the_count(tmp_path: Path) -> None:
    env_file = tmp_path / "twilio.env"
    env_file.write_text(f"TWILIO_AUTH_TOKEN={AUTH_TOKEN}\nSTATE_URL=sqlite:///{tmp_path / 'state.db'}\nGUNICORN_WORKERS=1\n")
    with Gunicorn({"GUNICORN_THREADS": "4"}, tmp_path) as server:
        wait_for(lambda: alive_workers(server), 20, server.process, server.log_path)
        old = alive_workers(server)
        env_file.write_text(env_file.read_text().replace("GUNICORN_WORKERS=1", "GUNICORN_WORKERS=one"))
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: alive_workers(server) and not alive_workers(server) & old, 20, server.process,
                 server.log_path)
        assert len(alive_workers(server)) == 1
    log = server.log_path.read_text().splitlines()
    assert "twilio-bridge: configuration error: GUNICORN_WORKERS=one: a whole number, 1 or more" in log
    assert any(line.startswith("twilio-bridge: reload refused") for line in log)


def test_a_refused_reload_keeps_the_grace_and_log_level_it_served(tmp_path: Path) -> None:
    """gunicorn reads this file again on a reload, before on_reload refuses the settings: the workers it then
    retires must still have the grace their held turns were promised (RASA_MAX_WAIT_SECONDS + 5), not the
    default's, and gunicorn's own lines keep their level."""
    env_file = tmp_path / "twilio.env"
    env_file.write_text("RASA_MAX_WAIT_SECONDS=abc\nLOG_LEVEL=loud\n")
    served = {**os.environ, "RASA_MAX_WAIT_SECONDS": "120", "LOG_LEVEL": "warning", "TWILIO_ENV_FILE": str(env_file),
              # both came from the file at the last start: the file's new values replace them
              "TWILIO_BRIDGE_FROM_ENV_FILE": "LOG_LEVEL,RASA_MAX_WAIT_SECONDS"}
    read = subprocess.run(
        [sys.executable, "-c", ("import runpy; c = runpy.run_path('gunicorn.conf.py'); "
                                "print(c['graceful_timeout'], c['loglevel'])")],
        cwd=ROOT, env=served, capture_output=True, text=True, timeout=60, check=True)
    assert read.stdout.split() == ["125", "warning"]
