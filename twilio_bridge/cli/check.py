"""`python twilio_voice_server.py check`: is this configuration ready for Twilio?

Each finding is one line, `ok`, `warn`, `fail` or `skip`; any `fail` makes the exit code 1, and a bad
setting 2 (after every check that could still run on the valid ones). A run with a `skip` never
ends in "no problems": something was not proven. Nothing changes anywhere unless `--apply` is
given: then the voice webhooks are set on one Twilio number through the REST API.
"""
from __future__ import annotations

import ipaddress
import secrets
import time
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException

from .. import routes
from ..config import E164, Settings, redact_url
from ..rasa.client import RasaClient, RasaError
from ..startup import Configuration, rest_mode_missing
from ..testing.phone import TwilioPhone, sid
from ..testing.relay import RelayRefused, open_relay_socket
from ..twilio_rest import network_problem, twilio_client, twilio_failure

VOICE_WEBHOOKS = (
    ("Voice: A call comes in", routes.VOICE),
    ("Voice: Primary handler fails", routes.FALLBACK),
    ("Voice: Call status changes", routes.CALL_STATUS),
)
MESSAGING_WEBHOOKS = (
    ("WhatsApp: When a message comes in", routes.WHATSAPP),
    ("WhatsApp: Status callback URL", routes.WHATSAPP_STATUS),
)
PLACEHOLDER_ORIGIN = "https://YOUR-PUBLIC-HOST"
API_TIMEOUT = 5.0


@dataclass
class Report:
    out: TextIO
    failures: int = 0
    warnings: int = 0
    skipped: int = 0

    def __call__(self, level: str, subject: str, detail: str) -> None:
        self.failures += level == "fail"
        self.warnings += level == "warn"
        self.skipped += level == "skip"
        print(f"{level:<5} {subject}: {detail}", file=self.out)

    def summary(self) -> str:
        counts = f"{self.warnings} warning(s)" + (f", {self.skipped} skipped" if self.skipped else "")
        if self.failures:
            return f"{self.failures} problem(s), {counts}"
        if self.skipped:
            return f"no problem in what was checked, but not everything was: {counts}"
        return f"no problems, {counts}"


def run_check(configuration: Configuration, bridge_url: str, out: TextIO, apply_to: str | None = None) -> int:
    settings, report = configuration.settings, Report(out)
    check_configuration(configuration, report)
    check_rasa(settings, report)
    check_action_server(settings, report)
    check_signatures(settings, report)
    origin = check_public_url(settings, report)
    check_whatsapp(settings, report)
    check_bridge(settings, bridge_url, report)
    check_relay(settings, bridge_url, report)
    print_webhooks(origin or PLACEHOLDER_ORIGIN, out)
    if apply_to is not None:
        apply_webhooks(settings, origin, apply_to, report)
    print(f"\n{report.summary()}", file=out)
    if configuration.problems:
        configuration.settings_or_exit()  # the server's own lines on stderr, and exit code 2
    return 1 if report.failures else 0


def check_configuration(configuration: Configuration, report: Report) -> None:
    """Each bad variable (the server would not start; the checks below use the default instead), and the file read."""
    source = configuration.source
    for problem in configuration.problems:
        report("fail", "configuration", problem)
    if configuration.problems and not source.found:
        report("warn", "configuration", source.describe())
    elif not configuration.problems:
        where = source.path if source.found else f"the environment; no {source.path.name} in {source.path.parent}"
        report("ok", "configuration", f"every variable is valid (from {where})")
    for note in source.notes():
        report("warn", "configuration", note)


def check_rasa(settings: Settings, report: Report) -> None:
    rasa = RasaClient(settings.rasa_webhook_url, settings.rasa_timeout)
    origin, webhook_url = redact_url(settings.rasa_origin), redact_url(settings.rasa_webhook_url)  # as shown
    try:
        report("ok", "rasa", f"{origin} answers {rasa.version(settings.rasa_origin, timeout=3.0)!r}")
    except RasaError as exc:
        report("fail", "rasa", f"GET {origin}/ failed: {rasa_problem(exc)}")
        return
    sender = f"check-{secrets.token_hex(4)}"
    started = time.monotonic()
    try:
        items = rasa.send(sender, "hola", {"channel": "check"})
    except RasaError as exc:
        report("fail", "rasa", f"a test message to {webhook_url} failed: {rasa_problem(exc)}")
        return
    latency = time.monotonic() - started
    if not items:
        report("fail", "rasa", f"'hola' from {sender} got an empty answer: Rasa could not process it (see its log)")
        return
    texts = [str(item["text"]) for item in items if item.get("text")]
    first = texts[0] if texts else f"{len(items)} item(s) without text"
    shown = first if len(first) <= 80 else first[:77] + "..."
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    report("ok", "rasa", f"'hola' from {sender} answered {shown!r}{more} in {latency * 1000:.0f} ms")


def check_action_server(settings: Settings, report: Report) -> None:
    """With its action server down Rasa still answers 200 (a fallback, then nothing): ask the server itself."""
    if settings.action_server_url is None:
        return
    rasa = RasaClient(settings.rasa_webhook_url, settings.rasa_timeout)
    shown = redact_url(settings.action_server_url)
    try:
        rasa.action_server_health(settings.action_server_url, timeout=3.0)
    except RasaError as exc:
        report("fail", "action server", f"the /health of ACTION_SERVER_URL={shown} failed: "
                                        f"{exc.kind}: {exc.detail} (Rasa's custom actions would fail)")
        return
    report("ok", "action server", f"the /health of {shown} answers ok")


def rasa_problem(exc: RasaError) -> str:
    if exc.kind == "unreachable":
        return "no connection (is Rasa running, with `rest:` in its credentials.yml?)"
    return f"{exc.kind}: {exc.detail}"


def check_signatures(settings: Settings, report: Report) -> None:
    if settings.validate_signature and not settings.twilio_auth_token:
        report("fail", "signatures", "no TWILIO_AUTH_TOKEN: no signature can be checked")
        return
    if not settings.validate_signature:
        report("warn", "signatures", "TWILIO_VALIDATE_SIGNATURE=false: anyone can call the webhooks "
                                     "(for local experiments only)")
        return
    keys = f" and shared keys {', '.join(sorted(settings.shared_keys))}" if settings.shared_keys else ""
    report("ok", "signatures", f"every webhook must be signed with TWILIO_AUTH_TOKEN{keys}")


def check_public_url(settings: Settings, report: Report) -> str | None:
    """The origin Twilio will call, when known."""
    origin = settings.public_base_url
    if origin is None:
        if settings.trusted_proxies:
            report("warn", "public url", f"PUBLIC_BASE_URL is not set; the URL is taken from the X-Forwarded-* "
                                         f"headers of {settings.trusted_proxies} trusted prox(ies)")
        else:
            report("warn", "public url", "PUBLIC_BASE_URL is not set: signatures are checked against the URL this "
                                         "server sees, which is right only when Twilio reaches it directly "
                                         "(no nginx, no tunnel)")
        return None
    parts = urlsplit(origin)
    if not_public(parts.hostname or ""):
        report("fail", "public url", f"PUBLIC_BASE_URL={origin}: Twilio cannot reach {parts.hostname}")
    elif parts.scheme != "https":
        report("warn", "public url", f"PUBLIC_BASE_URL={origin} is plain http: callers' words cross the internet "
                                     "unencrypted; put nginx with a certificate in front")
    else:
        report("ok", "public url", f"Twilio will call and sign {origin}")
    return origin


def not_public(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def check_whatsapp(settings: Settings, report: Report) -> None:
    """REST mode: Twilio's API at TWILIO_API_BASE_URL answers and accepts the credentials, as the Messages API
    the replies go through (one GET of the account's messages, which sends nothing)."""
    if not settings.whatsapp_rest_mode:
        missing = rest_mode_missing(settings)
        if settings.twilio_whatsapp_from:
            report("warn", "whatsapp", f"TWILIO_WHATSAPP_FROM is set without {missing}: replies "
                                       "go in TwiML mode, within RASA_TIMEOUT, not through the Messages API")
        else:
            report("ok", "whatsapp", f"TwiML mode: replies are the webhook's answer, within RASA_TIMEOUT "
                                     f"(REST mode needs {missing})")
        return
    assert settings.twilio_account_sid and settings.twilio_auth_token
    api = settings.twilio_api_base_url
    client = twilio_client(settings.twilio_account_sid, settings.twilio_auth_token, api, API_TIMEOUT)
    try:
        client.messages.list(limit=1)
    except TwilioException as exc:
        refusal = str(twilio_failure(exc))
        hint = (": TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not this account's" if " 401 " in f" {refusal} "
                else "")
        report("fail", "whatsapp", f"REST mode: the Messages API at {api} answered {refusal}{hint}; "
                                   "no reply would go out")
        return
    except requests.RequestException as exc:
        report("fail", "whatsapp", f"REST mode: cannot reach the Messages API: {network_problem(exc, API_TIMEOUT)} "
                                   "(TWILIO_API_BASE_URL); no reply would go out")
        return
    report("ok", "whatsapp", f"REST mode: the Messages API at {api} accepted account {settings.twilio_account_sid}'s "
                             f"credentials; replies go from {settings.twilio_whatsapp_from}")


def check_bridge(settings: Settings, bridge_url: str, report: Report) -> None:
    """Post a signed status callback, as Twilio would, to prove the token and the URL match the bridge's."""
    if settings.validate_signature and not settings.twilio_auth_token:
        report("skip", "bridge", "without TWILIO_AUTH_TOKEN no request can be signed as Twilio signs it")
        return
    signed_for = settings.public_base_url or bridge_url.rstrip("/")
    phone = TwilioPhone(bridge_url, settings.twilio_auth_token, signed_for, timeout=3.0)
    params = {"CallSid": sid("CA"), "AccountSid": settings.twilio_account_sid or phone.account_sid,
              "CallStatus": "in-progress", "From": "+15005550006", "To": "+15005550006"}
    try:
        response = phone.post(f"{signed_for}/webhook/twilio/status", params)
    except requests.RequestException as exc:
        report("skip", "bridge", f"nothing answers at {bridge_url} ({type(exc).__name__}); "
                                 "start the bridge to prove its token and URL match this configuration")
        return
    if response.status_code == 403:
        report("fail", "bridge", f"{bridge_url} rejected a status callback signed for {signed_for}: the bridge's "
                                 "TWILIO_AUTH_TOKEN or PUBLIC_BASE_URL differ from this configuration")
    elif response.status_code not in (200, 204):
        report("fail", "bridge", f"{bridge_url}/webhook/twilio/status answered HTTP {response.status_code}")
    elif settings.twilio_auth_token and settings.validate_signature:
        report("ok", "bridge", f"{bridge_url} accepted a status callback signed for {signed_for}")
    else:
        report("warn", "bridge", f"{bridge_url} answered HTTP {response.status_code} to an unsigned status callback")


def check_relay(settings: Settings, bridge_url: str, report: Report) -> None:
    """Relay mode: open the ConversationRelay WebSocket signed as Twilio would sign it, then close it at once.
    (In gather mode there is no WebSocket to prove.)"""
    if settings.voice_mode != "relay":
        return
    signed_for = routes.websocket_url((settings.public_base_url or bridge_url.rstrip("/")) + routes.RELAY)
    phone = TwilioPhone(bridge_url, settings.twilio_auth_token, timeout=3.0)
    try:
        open_relay_socket(phone, signed_for, timeout=3.0).close()
    except RelayRefused as exc:
        why = (": the bridge's TWILIO_AUTH_TOKEN or PUBLIC_BASE_URL differ from this configuration"
               if exc.status == 403 else "")
        report("fail", "relay", f"{bridge_url} refused the WebSocket signed for {signed_for} with HTTP {exc.status}{why}")
        return
    except (OSError, TimeoutError) as exc:
        report("skip", "relay", f"no WebSocket at {bridge_url} ({type(exc).__name__}); start the bridge to prove "
                                "relay mode is reachable")
        return
    if not signed_for.startswith("wss://"):
        report("warn", "relay", f"the WebSocket opens, but at {signed_for}: Twilio connects only to wss:// URLs "
                                "(set PUBLIC_BASE_URL to the https origin)")
        return
    report("ok", "relay", f"{bridge_url} accepted a WebSocket signed for {signed_for}")


def print_webhooks(origin: str, out: TextIO) -> None:
    print("\nWebhooks for the Twilio console (all HTTP POST):", file=out)
    for label, path in VOICE_WEBHOOKS + MESSAGING_WEBHOOKS:
        print(f"  {label + ':':<36} {origin}{path}", file=out)


def apply_webhooks(settings: Settings, origin: str | None, number: str, report: Report) -> None:
    """Set the voice webhooks on one of the account's numbers (WhatsApp senders are set in the console)."""
    if not E164.match(number):
        report("fail", "apply", f"--number {number!r} must be an E.164 number such as +5215512345678")
        return
    if not settings.twilio_account_sid or not settings.twilio_auth_token:
        report("fail", "apply", "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed to change a number")
        return
    if origin is None or not_public(urlsplit(origin).hostname or ""):
        report("fail", "apply", "set PUBLIC_BASE_URL to the https origin Twilio can reach first")
        return
    client = twilio_client(settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url,
                           API_TIMEOUT)
    try:
        matches = [n for n in client.incoming_phone_numbers.list(phone_number=number, limit=20)
                   if n.phone_number == number]
        if not matches:
            report("fail", "apply", f"{number} is not a number of account {settings.twilio_account_sid}")
            return
        urls = {path: origin + path for _, path in VOICE_WEBHOOKS}
        updated = matches[0].update(
            voice_url=urls[routes.VOICE], voice_method="POST",
            voice_fallback_url=urls[routes.FALLBACK], voice_fallback_method="POST",
            status_callback=urls[routes.CALL_STATUS], status_callback_method="POST",
        )
    except TwilioException as exc:
        report("fail", "apply", f"Twilio answered {str(twilio_failure(exc))}")
        return
    except requests.RequestException as exc:
        report("fail", "apply", f"could not reach Twilio's API at {settings.twilio_api_base_url}: {type(exc).__name__}")
        return
    report("ok", "apply", f"{number} ({updated.sid}) now sends calls to {updated.voice_url}, "
                          f"failures to {updated.voice_fallback_url}, status to {updated.status_callback}")
