"""The Twilio <-> Rasa bridge.

    gunicorn twilio_voice_server:app        production (see gunicorn.conf.py)
    python twilio_voice_server.py           development server on $PORT
    python twilio_voice_server.py call      a phone call from this terminal (see --help)
    python twilio_voice_server.py chat      WhatsApp messages from this terminal
    python twilio_voice_server.py check     configuration, Rasa, signatures, webhook URLs

Settings come from the environment, and from `twilio.env` in the working directory, or the
file named by TWILIO_ENV_FILE (variables already set win).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from flask import Flask

from twilio_bridge import cli
from twilio_bridge.app import create_app
from twilio_bridge.config import Settings
from twilio_bridge.logs import configure_logging
from twilio_bridge.startup import RequestHandler, announce, configure, env_file, local_origin


def settings_from_environment() -> Settings:
    """Load twilio.env, then the environment; exit with one line per bad variable."""
    return configure().settings_or_exit()


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
    host = os.environ.get("HOST", "127.0.0.1")
    application = build_app(settings)
    announce(settings, env_file(os.environ, Path.cwd()), local_origin(host, settings.port))
    application.run(host=host, port=settings.port, threaded=True, request_handler=RequestHandler)
    return 0


def main(argv: list[str]) -> int:
    return cli.main(argv, configure, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
