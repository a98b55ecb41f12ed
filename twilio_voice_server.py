"""The Twilio <-> Rasa bridge.

    gunicorn twilio_voice_server:app        production (see gunicorn.conf.py)
    python twilio_voice_server.py           development server on $PORT
    python twilio_voice_server.py call      a phone call from this terminal (see --help)
    python twilio_voice_server.py chat      WhatsApp messages from this terminal
    python twilio_voice_server.py check     configuration, Rasa, signatures, webhook URLs
    python twilio_voice_server.py notify    a WhatsApp template or SMS through the outbound API
    python twilio_voice_server.py dial-out  a call to a customer through the outbound API

Settings come from the environment, and from `twilio.env` in the working directory, or the
file named by TWILIO_ENV_FILE (variables already set win).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import load_dotenv
from flask import Flask

from twilio_bridge import cli
from twilio_bridge.app import create_app
from twilio_bridge.config import ConfigError, Settings, load_settings
from twilio_bridge.logs import configure_logging


def settings_from_environment() -> Settings:
    """Load twilio.env, then the environment; exit with one line per bad variable."""
    env_file = Path(os.environ.get("TWILIO_ENV_FILE") or Path.cwd() / "twilio.env")
    if env_file.is_file():
        load_dotenv(env_file, override=False)
    try:
        return load_settings(os.environ, workdir=Path.cwd())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"twilio-bridge: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def build_app(settings: Settings | None = None) -> Flask:
    settings = settings or settings_from_environment()
    configure_logging(settings.log_level)
    return create_app(settings)


def __getattr__(name: str) -> Flask:
    """`twilio_voice_server:app` is built on first use, so importing this module has no side effects."""
    if name == "app":
        globals()["app"] = application = build_app()
        return application
    raise AttributeError(name)


def serve(settings: Settings) -> int:
    build_app(settings).run(host=os.environ.get("HOST", "127.0.0.1"), port=settings.port, threaded=True)
    return 0


def main(argv: list[str]) -> int:
    return cli.main(argv, settings_from_environment, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
