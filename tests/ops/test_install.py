"""`install_twilio_server.sh`'s own options: --help and --version answer without installing anything."""
from __future__ import annotations

import subprocess

from tests.servers import ROOT
from twilio_bridge import __version__

SCRIPT = ROOT / "install_twilio_server.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)


def test_help_is_the_scripts_description_and_nothing_else() -> None:
    done = run("--help")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "Set up the bridge in this directory. Safe to run again: it only does what is missing."
    for option in ("--dev", "--systemd", "--version"):
        assert any(line.lstrip().startswith(f"./install_twilio_server.sh {option} ") for line in lines), option
    assert not [line for line in lines if line.startswith(("set ", "#"))]


def test_version_names_the_bridges_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.split()[:2] == ["twilio-bridge", __version__]


def test_an_unknown_option_is_refused_with_a_pointer_to_help() -> None:
    done = run("--verbose")
    assert done.returncode == 2
    assert done.stderr.strip() == "install_twilio_server.sh: unknown option --verbose (try --help)"
