"""The least a gather-mode turn can cost on the bridge's stack, for `turn_latency.py --floor`.

Served like the bridge (the shipped gunicorn.conf.py: gthread, its workers and threads), it does only
what no turn can skip: Flask reads the form, asks Rasa through the bridge's own RasaClient, and answers
with TwiML built by string formatting. No signature check, call state, replay, hold, text cleaning,
log line or metrics: the bridge's turn minus this one is what the bridge's own work costs.
"""
from __future__ import annotations

import os
from xml.sax.saxutils import escape

from flask import Flask, Response, request

from twilio_bridge import routes
from twilio_bridge.rasa.client import RasaClient

ANSWER = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="{action}" input="speech dtmf" '
          'language="es-MX"><Say language="es-MX">{text}</Say></Gather></Response>')

app = Flask(__name__)
rasa = RasaClient(os.environ["RASA_WEBHOOK_URL"], timeout=5.0)


@app.get(routes.HEALTH)
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post(routes.SPEECH)
def turn() -> Response:
    items = rasa.send(request.form["CallSid"], request.form["SpeechResult"], {"channel": "voice"})
    text = " ".join(item["text"] for item in items if "text" in item)
    return Response(ANSWER.format(action=routes.SPEECH, text=escape(text)), mimetype="text/xml")
