"""`python twilio_voice_server.py demo`: the bridge seen working in one command, with nothing to configure.

The Rasa stand-in and the bridge start in this process on free ports (or the ones given), with a
throwaway auth token and state directory, and `call` (or `chat`, with --chat) talks to them from this
terminal. twilio.env is not read. Everything stops, and the state and the bridge's log are removed,
when the call or chat ends, however it ends.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from werkzeug.serving import make_server

from ..app import close_app, create_app
from ..config import Settings
from ..logs import configure_logging
from ..startup import RequestHandler
from ..testing.phone import TwilioPhone
from ..testing.whatsapp_user import WhatsAppUser
from .call import Ask, CallSimulator
from .chat import REPLY_WAIT_SECONDS, ChatSimulator

ENTRY = "python twilio_voice_server.py"
PERSON = "+5215500000000"  # who a hand-off dials; the demo asks you how that leg ended


def run_demo(args: argparse.Namespace, ask: Ask) -> int:
    """A port taken: werkzeug says so in two lines and exits 1; what had started stops on the way out."""
    from ..testing.standin import RasaStandIn  # here: its server (aiohttp) would cost every bridge process 8 MB

    with tempfile.TemporaryDirectory(prefix="twilio-bridge-demo-") as workdir, \
            RasaStandIn().start(port=args.rasa_port or 0) as standin, \
            open(Path(workdir) / "bridge.log", "w", encoding="utf-8") as log:
        token = "demo-" + secrets.token_hex(8)
        with serving(args.port or 0, standin.webhook_url, token, Path(workdir), log) as bridge_url:
            print(f"Demo: the Rasa stand-in (a scripted card-blocking assistant in Spanish) on {standin.base_url}, "
                  f"the bridge on {bridge_url} (its log: {log.name}). twilio.env is not read; all of it stops "
                  "when you hang up.")
            if args.chat:
                print(f"WhatsApp: each line is a message. For a phone call instead: {ENTRY} demo")
                user = WhatsAppUser(bridge_url, token)
                return ChatSimulator(user, ask, sys.stdout, sys.stderr, None, REPLY_WAIT_SECONDS,
                                     args.script is not None).run()
            print(f"For WhatsApp instead: {ENTRY} demo --chat. While this runs, another terminal can "
                  f"call or chat too: TWILIO_AUTH_TOKEN={token} {ENTRY} call {bridge_url}")
            print("You are the caller: type what you say; #1234 presses keys; an empty line is silence; "
                  "Ctrl-D hangs up.")
            return CallSimulator(TwilioPhone(bridge_url, token), ask, sys.stdout, sys.stderr).run(
                "+525512345678", "+525500000000")


@contextmanager
def serving(port: int, rasa_webhook_url: str, token: str, workdir: Path, log: TextIO) -> Iterator[str]:
    """The bridge on 127.0.0.1:port (0: a free one) in a background thread, its log lines in `log`."""
    settings = Settings(rasa_webhook_url=rasa_webhook_url, twilio_auth_token=token, fallback_phone_number=PERSON,
                        state_url=f"sqlite:///{workdir / 'state.db'}")
    configure_logging(settings.log_level, json=False, stream=log)
    application = create_app(settings)
    try:
        server = make_server("127.0.0.1", port, application, threaded=True, request_handler=RequestHandler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
    finally:
        close_app(application)
