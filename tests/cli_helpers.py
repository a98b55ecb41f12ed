"""Running `python twilio_voice_server.py ...` as a user would: a child process with its own environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import BRIDGE_VARIABLES

ENTRY = Path(__file__).resolve().parent.parent / "twilio_voice_server.py"


def cli_env(**settings: str) -> dict[str, str]:
    """The environment with every bridge setting given here or empty, and no TWILIO_ENV_FILE,
    so neither the developer's environment nor a twilio.env can leak in."""
    env = {name: value for name, value in os.environ.items() if name != "TWILIO_ENV_FILE"}
    env.update({name: "" for name in BRIDGE_VARIABLES})
    # Removed, not blanked: prometheus_client takes an empty one as the working directory and writes there.
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ENTRY), *args], env=env, cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=timeout, check=False)
