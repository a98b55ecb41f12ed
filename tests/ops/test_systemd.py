"""`install_twilio_server.sh --systemd` and the unit it installs, in a throwaway install directory.

The directory holds what a checkout holds for this step and a stand-in .venv (links to the running
interpreter, its requirements stamp up to date) so the script installs nothing with pip. The unit goes
to UNIT_DIR and systemctl is a recorder, so nothing on this machine changes outside tmp_path.
"""
from __future__ import annotations

import configparser
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops_tools import readme_gunicorn_command, require_command
from tests.servers import ROOT, gunicorn_setting, without_bridge_settings
from twilio_bridge.config import ConfigError, load_settings

SERVICE_USER = "daemon"  # exists on Debian; "nobody" draws systemd's warning about a shared user


@pytest.fixture
def install_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("--systemd must run as root")
    directory = tmp_path / "twilio-bridge"
    (directory / "deploy").mkdir(parents=True)
    for name in ("install_twilio_server.sh", "twilio_requirements.txt", "twilio.env.example", "gunicorn.conf.py",
                 "twilio_voice_server.py", "deploy/twilio-bridge.service"):
        shutil.copy2(ROOT / name, directory / name)
    bin_dir = directory / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "gunicorn").symlink_to(Path(sys.executable).parent / "gunicorn")
    requirements = hashlib.sha256((ROOT / "twilio_requirements.txt").read_bytes()).hexdigest()
    (directory / ".venv" / ".requirements.sha256").write_text(requirements + "\n")
    return directory


def install(directory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    recorder = tmp_path / "systemctl"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "systemctl.log"}\n')
    recorder.chmod(0o755)
    env = {**os.environ, "UNIT_DIR": str(tmp_path / "units"), "BRIDGE_USER": SERVICE_USER,
           "SYSTEMCTL": str(recorder)}
    result = subprocess.run([str(directory / "install_twilio_server.sh"), "--systemd"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def systemctl_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "systemctl.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def test_installs_the_unit_for_its_own_directory_then_changes_nothing_the_second_time(
        install_dir: Path, tmp_path: Path) -> None:
    install(install_dir, tmp_path)
    unit_file = tmp_path / "units" / "twilio-bridge.service"
    service = read_unit(unit_file)["Service"]
    directory = str(install_dir.resolve())
    assert service["User"] == SERVICE_USER
    assert service["WorkingDirectory"] == directory
    assert "EnvironmentFile" not in service, "gunicorn.conf.py reads twilio.env, and again on reload"
    assert int(service["TimeoutStopSec"]) > 35, "a stop lets held turns finish (graceful_timeout)"
    assert service["ReadWritePaths"] == f"{directory}/state"
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    command = shlex.split(service["ExecStart"])
    assert command[0] == f"{directory}/.venv/bin/gunicorn"
    assert ["gunicorn", *command[1:]] == readme_gunicorn_command()
    assert "/opt/twilio-bridge" not in unit_file.read_text()
    # twilio.env was just made from the example: no token yet, so enabled but not started.
    assert systemctl_calls(tmp_path) == ["daemon-reload", "enable twilio-bridge.service"]

    env_file = (install_dir / "twilio.env").stat()
    assert stat.S_IMODE(env_file.st_mode) == 0o640, "twilio.env holds the auth token: not world-readable"
    assert (install_dir / "state").owner() == SERVICE_USER

    with open(install_dir / "twilio.env", "a") as settings:
        settings.write("TWILIO_AUTH_TOKEN=0123456789abcdef\n")
    before = unit_file.stat().st_mtime_ns
    second = install(install_dir, tmp_path)
    assert "is up to date" in second.stdout
    assert unit_file.stat().st_mtime_ns == before
    assert systemctl_calls(tmp_path) == ["enable twilio-bridge.service", "start twilio-bridge.service"]


def test_the_installed_unit_passes_systemd_analyze_verify(install_dir: Path, tmp_path: Path) -> None:
    analyze = require_command("systemd-analyze", "systemd")
    install(install_dir, tmp_path)
    result = subprocess.run([analyze, "verify", str(tmp_path / "units" / "twilio-bridge.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: any warning about this unit is a failure
    problems = [line for line in result.stderr.splitlines() if "twilio-bridge.service" in line]
    assert problems == []


def test_the_unit_allows_the_descriptors_a_full_worker_holds(tmp_path: Path) -> None:
    """Per call in flight a worker holds the caller's socket, gunicorn's poller for it and a socket to Rasa,
    plus a bounded few for SQLite: systemd's default soft limit (1024) is too close for 250 threads."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "twilio-bridge.service")
    threads = int(gunicorn_setting("threads", tmp_path))
    assert int(unit["Service"].get("LimitNOFILE", "1024")) >= 4 * threads + 256


def test_a_stop_waits_longer_than_gunicorn_lets_held_turns_finish_at_the_longest_wait_allowed(tmp_path: Path) -> None:
    """systemd SIGKILLs what is left after TimeoutStopSec: a caller on hold would lose the call."""
    unit = read_unit(ROOT / "deploy" / "twilio-bridge.service")
    longest = {**without_bridge_settings(), "RASA_MAX_WAIT_SECONDS": "120"}  # config.py's upper bound
    assert load_settings({"TWILIO_AUTH_TOKEN": "t", "RASA_MAX_WAIT_SECONDS": "120"}).rasa_max_wait_seconds == 120
    with pytest.raises(ConfigError):
        load_settings({"TWILIO_AUTH_TOKEN": "t", "RASA_MAX_WAIT_SECONDS": "120.5"})
    graceful = int(gunicorn_setting("graceful_timeout", tmp_path, longest))
    assert int(unit["Service"]["TimeoutStopSec"]) > graceful


@pytest.mark.parametrize("lines, starts", [
    ('TWILIO_AUTH_TOKEN=""\n', False),
    ("TWILIO_AUTH_TOKEN=0123456789abcdef\nTWILIO_AUTH_TOKEN=\n", False),  # the last one counts
    ("export TWILIO_AUTH_TOKEN=0123456789abcdef\n", True),
    ("TWILIO_AUTH_TOKEN = '0123456789abcdef'\n", True),
])
def test_the_service_is_started_when_twilio_env_gives_it_a_token_as_the_bridge_reads_it(
        install_dir: Path, tmp_path: Path, lines: str, starts: bool) -> None:
    install(install_dir, tmp_path)
    systemctl_calls(tmp_path)
    with open(install_dir / "twilio.env", "a") as settings:
        settings.write(lines)
    second = install(install_dir, tmp_path)
    assert ("start twilio-bridge.service" in systemctl_calls(tmp_path)) == starts
    assert ("set TWILIO_AUTH_TOKEN" in second.stdout) != starts


def test_a_directory_whose_name_has_an_ampersand_is_the_units_directory(install_dir: Path, tmp_path: Path) -> None:
    directory = install_dir.rename(install_dir.parent / "ivr&bridge")
    install(directory, tmp_path)
    service = read_unit(tmp_path / "units" / "twilio-bridge.service")["Service"]
    assert service["WorkingDirectory"] == str(directory.resolve())
    assert service["ReadWritePaths"] == f"{directory.resolve()}/state"


@pytest.mark.parametrize("name", ["ivr bridge", "50%bridge"])
def test_a_directory_a_unit_cannot_hold_is_refused_with_one_line(name: str, install_dir: Path, tmp_path: Path) -> None:
    """ExecStart= and ReadWritePaths= split at a space and % is a specifier: the unit would run something else."""
    directory = install_dir.rename(install_dir.parent / name)
    env = {**os.environ, "UNIT_DIR": str(tmp_path / "units"), "BRIDGE_USER": SERVICE_USER,
           "SYSTEMCTL": str(tmp_path / "no-systemctl")}
    result = subprocess.run([str(directory / "install_twilio_server.sh"), "--systemd"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"the install directory '{directory.resolve()}' has a space, %, quote or backslash" in result.stderr
    assert not (tmp_path / "units").exists()
