"""The application factory: what the app talks to is passed in, so tests inject their own."""
from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import metrics, routes
from .bridge import EXTENSION, Bridge
from .config import Settings, load_settings
from .delivery.courier import start_delivery
from .delivery.queue import JobQueue, open_queue
from .logs import log
from .outbound import routes as outbound_routes
from .rasa.client import RasaClient
from .state import StateStore, open_store
from .voice import routes as voice_routes
from .voice.relay import routes as relay_routes
from .voice.relay.server import stop_relay_loop
from .web import health, metrics_endpoint
from .web.signature import SignatureCheck
from .whatsapp import routes as whatsapp_routes

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def create_app(settings: Settings | None = None, rasa: RasaClient | None = None,
               store: StateStore | None = None, queue: JobQueue | None = None) -> Flask:
    settings = settings or load_settings(os.environ)
    app = Flask(__name__, static_folder=None)
    app.extensions[EXTENSION] = Bridge(
        settings=settings,
        rasa=rasa or RasaClient(settings.rasa_webhook_url, settings.rasa_timeout,
                                pool_size=settings.rasa_max_in_flight),
        store=store or open_store(settings.state_url),
        signatures=SignatureCheck(settings.twilio_auth_token, settings.shared_keys, settings.public_base_url),
        queue=queue or (open_queue(settings.state_url) if settings.delivers_through_rest else None),
    )
    trust_proxies(app, settings)
    register_blueprints(app)
    register_request_log(app)
    start_background_work(app)
    if not settings.validate_signature:
        log.warning("signature.validation_disabled", detail="TWILIO_VALIDATE_SIGNATURE=false: anyone can call these webhooks")
    return app


def trust_proxies(app: Flask, settings: Settings) -> None:
    """Believe X-Forwarded-Proto/Host only from as many proxies as the operator says stand in front."""
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(voice_routes.bp)
    app.register_blueprint(relay_routes.bp)
    app.register_blueprint(whatsapp_routes.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics_endpoint.bp)
    outbound_routes.register(app, app.extensions[EXTENSION].settings)


def start_background_work(app: Flask) -> None:
    """Delivery threads (WhatsApp replies, outbound messages), in this process: messages stored before a restart
    go out after it."""
    current: Bridge = app.extensions[EXTENSION]
    if current.queue is not None and current.settings.delivers_through_rest:
        current.workers = start_delivery(current, current.queue)


def close_app(app: Flask, timeout: float = 15.0) -> None:
    """Stop the background work (gunicorn's worker_exit, tests) within `timeout` seconds in all: jobs in
    hand finish or stay queued; relay calls in progress end with a person. Everything winds down at once."""
    deadline = time.monotonic() + timeout
    current: Bridge = app.extensions[EXTENSION]
    if current.workers is not None:
        current.workers.begin_stop()
    stop_relay_loop(app, timeout)
    if current.workers is not None:
        current.workers.stop(max(0.0, deadline - time.monotonic()))
        current.workers = None


def register_request_log(app: Flask) -> None:
    """One summary line and one count per webhook, carrying what the route bound (call_sid, turn, rasa_ms, outcome),
    and nothing an earlier request bound: each request runs in a context of its own (`in_own_context`)."""
    app.wsgi_app = in_own_context(app.wsgi_app)  # type: ignore[method-assign]

    @app.before_request
    def start_request() -> None:
        g.started = time.monotonic()

    @app.after_request
    def summarise(response: Response) -> Response:
        seconds = time.monotonic() - g.get("started", time.monotonic())
        method = log.debug if request.path in (routes.HEALTH, routes.METRICS) else log.info
        method("webhook", route=request.path, status=response.status_code, ms=round(seconds * 1000))
        outcome = structlog.contextvars.get_contextvars().get("outcome") or f"http_{response.status_code}"
        metrics.webhook_answered(request.url_rule.rule if request.url_rule else "unmatched", outcome, seconds)
        return response


def in_own_context(wsgi_app: WSGIApplication) -> WSGIApplication:
    """`wsgi_app` run for each request in a new, empty contextvars context. A worker thread's own context keeps every
    variable any request of its life has set: the log's bound values (each key a variable of its own) were cleared
    one by one at the start of a request and looked through, all of them, on every line (with thirty keys bound
    before, a line took 42 µs that now takes 23: `bench/README.md`, "seventh session")."""

    def run(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return contextvars.Context().run(wsgi_app, environ, start_response)

    return run
