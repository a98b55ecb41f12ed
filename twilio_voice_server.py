"""The Twilio <-> Rasa bridge.

    gunicorn twilio_voice_server:app        production (see gunicorn.conf.py)
    python twilio_voice_server.py           development server on $PORT
    python twilio_voice_server.py demo      the stand-in, the bridge and a call, on free ports
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

# gunicorn.conf.py names its master here until the master has started (on_starting): importing this
# module in that process before then is `gunicorn --preload`, which would build the app in the master,
# where its delivery threads die at the fork and its SQLite files are shared by every worker.
if os.environ.get("TWILIO_BRIDGE_GUNICORN_LOADING") == str(os.getpid()):
    print("twilio-bridge: gunicorn --preload is not supported: the app starts threads and opens the state "
          "store in each worker (remove --preload / preload_app)", file=sys.stderr)
    raise SystemExit(2)

# An empty setting is an unset one, here too: prometheus_client, imported below, would take an empty
# PROMETHEUS_MULTIPROC_DIR as the working directory and leave its files there.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from flask import Flask  # noqa: E402  (after the refusal above, before anything is built)

from twilio_bridge import cli  # noqa: E402
from twilio_bridge.app import create_app  # noqa: E402
from twilio_bridge.config import Settings, redact_url  # noqa: E402
from twilio_bridge.logs import configure_logging  # noqa: E402
from twilio_bridge.startup import RequestHandler, announce, configure, env_file, local_origin  # noqa: E402
from twilio_bridge.state import backend, redis_too_old  # noqa: E402


def settings_from_environment() -> Settings:
    """Load twilio.env, then the environment; exit with one line per bad variable."""
    return configure().settings_or_exit()


def refuse_unusable_setup(settings: Settings) -> None:
    """What the settings alone cannot tell: a state store the bridge cannot use. One line, exit 2."""
    kind, where = backend(settings.state_url)
    problem = redis_too_old(where) if kind == "redis" else None
    if problem:
        print(f"twilio-bridge: configuration error: STATE_URL={redact_url(settings.state_url)}: {problem}", file=sys.stderr)
        raise SystemExit(2)


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
    refuse_unusable_setup(settings)
    application = build_app(settings)
    announce(settings, env_file(os.environ, Path.cwd()), local_origin(settings.host, settings.port))
    application.run(host=settings.host, port=settings.port, threaded=True, request_handler=RequestHandler)
    return 0


def main(argv: list[str]) -> int:
    return cli.main(argv, configure, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
