"""Running `python twilio_voice_server.py ...` as a user would: a child process with its own environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENTRY = Path(__file__).resolve().parent.parent / "twilio_voice_server.py"
SETTINGS = ("PORT", "RASA_WEBHOOK_URL", "RASA_TIMEOUT", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
            "TWILIO_VALIDATE_SIGNATURE", "TWILIO_WEBHOOK_SHARED_KEYS", "PUBLIC_BASE_URL", "TRUSTED_PROXIES",
            "FALLBACK_PHONE_NUMBER", "VOICE_LANGUAGE", "VOICE_NAME", "VOICE_GREETING", "VOICE_MAX_SILENCES",
            "TWILIO_WHATSAPP_FROM", "TWILIO_API_BASE_URL", "STATE_URL", "LOG_LEVEL")


def cli_env(**settings: str) -> dict[str, str]:
    """The environment with every bridge setting given here or empty, so no twilio.env can leak in."""
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    env.update({name: "" for name in SETTINGS})
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ENTRY), *args], env=env, cwd=cwd, input=stdin, text=True,
                          capture_output=True, timeout=timeout, check=False)
