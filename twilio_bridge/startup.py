"""What the server says when it starts: where its settings came from and what it will do with them.

The development server and gunicorn's master say it once (workers do not): which env file was read,
whether Rasa answers, the voice and WhatsApp modes, the local webhook URLs, and warnings about
settings that work but should not go to production. On a terminal it is a short readable block;
elsewhere (journald, docker logs) one JSON log line, `bridge.starting`, and one per warning.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Mapping, TextIO

from dotenv import load_dotenv
from dotenv.parser import parse_stream
from werkzeug.serving import WSGIRequestHandler

from . import __version__, routes
from .config import VARIABLES, Settings, read_settings, redact_url
from .logs import log, write_line
from .rasa.client import RasaClient, RasaError

ENV_FILE = "twilio.env"
# Every name the bridge and gunicorn.conf.py read from the env file.
SETTING_NAMES = [name for name, _, _ in VARIABLES] + ["GUNICORN_WORKERS", "GUNICORN_THREADS"]
LOCAL_WEBHOOKS = (routes.VOICE, routes.FALLBACK, routes.CALL_STATUS, routes.WHATSAPP, routes.WHATSAPP_STATUS)


@dataclass(frozen=True)
class EnvFile:
    """The file settings are read from: TWILIO_ENV_FILE, else twilio.env in the working directory."""

    path: Path
    named: bool  # by TWILIO_ENV_FILE

    @property
    def found(self) -> bool:
        return self.path.is_file()

    def notes(self) -> list[str]:
        """What python-dotenv passes over without a word: a name set twice, where the last line wins, and a
        misspelled setting (a name the bridge does not read, close to one it does), which counts for nothing."""
        if not self.found:
            return []
        lines: dict[str, list[int]] = {}
        with self.path.open(encoding="utf-8", errors="replace") as stream:
            for binding in parse_stream(stream):
                if binding.key is not None:
                    before = binding.original.string[:binding.original.string.index(binding.key)]
                    number = binding.original.line + before.count("\n")  # its text starts with the blank lines above
                    lines.setdefault(binding.key, []).append(number)
        misspelled = []
        for name, numbers in lines.items():
            meant = get_close_matches(name.upper(), SETTING_NAMES, n=1, cutoff=0.8) if name not in SETTING_NAMES else []
            if meant:
                misspelled.append(f"{self.path}: line {numbers[0]}: {name} is not a setting of the bridge "
                                  f"({meant[0]}?): ignored")
        return misspelled + [f"{self.path}: {name} is set on lines {_words(numbers)}: the last one counts"
                             for name, numbers in lines.items() if len(numbers) > 1]

    def describe(self) -> str:
        if self.found:
            return str(self.path)
        if self.named:
            return f"TWILIO_ENV_FILE={self.path} does not exist: settings come from the environment only"
        return (f"no {ENV_FILE} in {self.path.parent}: settings come from the environment only "
                f"(./install_twilio_server.sh creates {ENV_FILE} from {ENV_FILE}.example)")


def _words(items: list[object]) -> str:
    """`A`, `A and B`, `A, B and C`."""
    names = [str(item) for item in items]
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1]))) if names else ""


def env_file(environ: Mapping[str, str], cwd: Path) -> EnvFile:
    named = environ.get("TWILIO_ENV_FILE")
    return EnvFile(Path(named) if named else cwd / ENV_FILE, bool(named))


def load_env_file() -> EnvFile:
    """Read the env file into the environment, under the variables already set there."""
    found = env_file(os.environ, Path.cwd())
    if found.found:
        load_dotenv(found.path, override=False)
    return found


@dataclass(frozen=True)
class Configuration:
    """The settings as read, the lines naming each bad variable, and the file they came from."""

    settings: Settings
    problems: list[str]
    source: EnvFile

    def settings_or_exit(self) -> Settings:
        """The settings, or one line per bad variable on stderr and exit code 2."""
        if not self.problems:
            return self.settings
        for problem in self.problems:
            print(f"twilio-bridge: configuration error: {problem}", file=sys.stderr)
        for note in self.source.notes():
            print(f"twilio-bridge: {note}", file=sys.stderr)
        if not self.source.found:
            print(f"twilio-bridge: {self.source.describe()}", file=sys.stderr)
        raise SystemExit(2)


def configure() -> Configuration:
    """The env file loaded, then the settings read from the environment."""
    source = load_env_file()
    settings, problems = read_settings(os.environ, workdir=Path.cwd())
    return Configuration(settings, problems, source)


class RequestHandler(WSGIRequestHandler):
    """The development server's (and the demo's) requests: the app logs one structured line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """werkzeug's access line would repeat the app's own."""


def local_origin(host: str, port: int) -> str:
    """Where this host reaches the server: a wildcard address is reached on the loopback; IPv6 in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def banner(settings: Settings, source: EnvFile, origin: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, text) lines, and warnings."""
    lines = [("settings", source.describe()), ("rasa", rasa_status(settings)),
             ("voice", voice_mode(settings)), ("whatsapp", whatsapp_mode(settings)),
             ("webhooks", " ".join(origin + path for path in LOCAL_WEBHOOKS))]
    if settings.outbound_api_token:
        lines.append(("outbound", f"{origin}{routes.OUTBOUND_MESSAGES} {origin}{routes.OUTBOUND_CALLS} "
                                  "(Bearer OUTBOUND_API_TOKEN)"))
    if settings.public_base_url:
        lines.append(("public url", f"Twilio calls and signs {settings.public_base_url}"))
    return lines, setting_warnings(settings) + source.notes()


def rasa_status(settings: Settings) -> str:
    # No retry of a refused connection: a start-up line must not wait.
    shown = redact_url(settings.rasa_webhook_url)
    try:
        greeting = RasaClient(settings.rasa_webhook_url, 2.0, pool_size=1, connect_retries=0).version(settings.rasa_origin)
    except RasaError as exc:
        return (f"{shown}: does not answer ({exc.detail}): callers get an apology and a person "
                "until it does (no Rasa at hand? python -m twilio_bridge.testing.standin)")
    return f"{shown}: answers {greeting!r}"


def voice_mode(settings: Settings) -> str:
    person = (f"hand-off to {settings.fallback_phone_number}" if settings.fallback_phone_number
              else "no FALLBACK_PHONE_NUMBER: a hand-off says goodbye instead")
    if settings.voice_mode == "relay":
        return (f"relay (ConversationRelay: Twilio listens and speaks, text over the WebSocket {routes.RELAY}), "
                f"{settings.voice_language}; {person}")
    return f"gather (<Gather> speech and keypad), {settings.voice_language}, {settings.voice_name}; {person}"


def whatsapp_mode(settings: Settings) -> str:
    if settings.whatsapp_rest_mode:
        return (f"REST replies through {settings.twilio_api_base_url} from {settings.twilio_whatsapp_from}, "
                f"{settings.whatsapp_workers} delivery threads per worker")
    return f"TwiML replies, in the webhook's answer (REST replies need {rest_mode_missing(settings)})"


def rest_mode_missing(settings: Settings) -> str:
    """The variables WhatsApp's REST mode still needs, as words: `A`, `A and B`, `A, B and C`."""
    names = [name for name, value in (("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                                      ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                                      ("TWILIO_WHATSAPP_FROM", settings.twilio_whatsapp_from)) if not value]
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1]))) if names else ""


def setting_warnings(settings: Settings) -> list[str]:
    warnings = []
    if settings.public_base_url and settings.public_base_url.startswith("http://"):
        warnings.append(f"PUBLIC_BASE_URL={settings.public_base_url} is plain http: Twilio signs the URL it calls, "
                        "so it must call this one, and callers' words would cross the internet unencrypted; "
                        "use https (nginx with a certificate in front)")
    if not settings.validate_signature:
        warnings.append("TWILIO_VALIDATE_SIGNATURE=false: anyone can call the webhooks (local experiments only)")
    return warnings


def announce(settings: Settings, source: EnvFile, origin: str, stream: TextIO | None = None) -> None:
    """Say it: readable on a terminal, JSON log lines elsewhere."""
    stream = stream or sys.stderr
    lines, warnings = banner(settings, source, origin)
    if not stream.isatty():
        log.info("bridge.starting", version=__version__, **{label.replace(" ", "_"): text for label, text in lines})
        for warning in warnings:
            log.warning("bridge.setting_warning", detail=warning)
        return
    write_line(stream, f"twilio-bridge {__version__} starting")
    for label, text in lines:
        if label == "webhooks":
            text = "\n".join(f"{'':14}{url}" for url in text.split()).lstrip()
        write_line(stream, f"  {label + ':':<12}{text}")
    for warning in warnings:
        write_line(stream, f"  warning:    {warning}")
