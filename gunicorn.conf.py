"""gunicorn settings for the bridge: `gunicorn -c gunicorn.conf.py twilio_voice_server:app`.

Threads, because a webhook spends nearly all its time waiting for Rasa: one thread per
call in flight costs a little memory, not a process.
"""
import os
from pathlib import Path

from dotenv import load_dotenv

load_dotenv(os.environ.get("TWILIO_ENV_FILE") or Path.cwd() / "twilio.env", override=False)

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5001')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "50"))
timeout = 30  # a worker silent this long is stuck: every webhook answers within RASA_TIMEOUT (< 15 s)
graceful_timeout = 20  # lets calls in flight finish their turn on reload (SIGHUP) or stop (SIGTERM)
keepalive = 5
accesslog = None  # the app logs one structured line per webhook
errorlog = "-"


def on_starting(server):
    """Check the settings once in the master: a bad one stops gunicorn with one line naming it."""
    from twilio_voice_server import settings_from_environment

    settings_from_environment()


def worker_exit(server, worker):
    """A worker stopping (reload, SIGTERM) lets its WhatsApp deliveries in hand finish; queued ones stay queued."""
    import twilio_voice_server
    from twilio_bridge.app import close_app

    application = vars(twilio_voice_server).get("app")
    if application is not None:
        close_app(application, timeout=graceful_timeout / 2)
