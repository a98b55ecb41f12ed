"""The one way a route hands Twilio a TwiML document: 200, text/xml."""
from __future__ import annotations

from flask import Response
from twilio.twiml import TwiML


def twiml(document: TwiML | str) -> Response:
    return Response(str(document), status=200, mimetype="text/xml")
