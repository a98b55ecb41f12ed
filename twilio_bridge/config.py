"""Settings: one frozen object built from the environment at start.

Every problem is reported at once, one line per variable, so an operator fixes
the whole file in one pass instead of one restart per mistake.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import SplitResult, urlsplit

from urllib3.util import parse_url

HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
E164 = re.compile(r"\A\+[1-9][0-9]{6,14}\Z")  # [0-9], not \d: \d takes any script's digits ("٢"), no number has them
MIN_TOKEN_CHARACTERS = 16
SECRET_FIELDS = frozenset({"twilio_auth_token", "shared_keys", "metrics_token", "outbound_api_token"})  # never echoed
VOICE_MODES = ("gather", "relay")
RELAY_INTERRUPTIBLE = ("any", "speech", "dtmf", "none")
WHATSAPP_BUTTON_STYLES = ("interactive", "text")  # REST mode: buttons to tap, or a numbered list
# ConversationRelay's own voice names (Amazon's neural voices), per VOICE_LANGUAGE: `Polly.Mia` is not one.
RELAY_VOICES = {"es-MX": "Mia-Neural", "es-US": "Lupe-Neural", "es-ES": "Lucia-Neural",
                "en-US": "Joanna-Neural", "en-GB": "Amy-Neural"}


class ConfigError(Exception):
    """Bad or missing settings; each line of the message names one variable."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5001
    rasa_webhook_url: str = "http://localhost:5005/webhooks/rest/webhook"
    action_server_url: str | None = None
    rasa_timeout: float = 8.0
    voice_hold_seconds: float = 4.0
    rasa_max_wait_seconds: float = 30.0
    rasa_max_in_flight: int = 400
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    validate_signature: bool = True
    shared_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    public_base_url: str | None = None
    trusted_proxies: int = 0
    fallback_phone_number: str | None = None
    voice_language: str = "es-MX"
    voice_name: str = "Polly.Mia"
    voice_greeting: str | None = None
    voice_max_silences: int = 2
    voice_mode: str = "gather"
    voice_silence_seconds: float = 8.0
    relay_tts_provider: str = "Amazon"
    relay_voice: str | None = None
    relay_transcription_provider: str | None = None
    relay_interruptible: str = "any"
    twilio_whatsapp_from: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    whatsapp_rate_limit: int = 20
    whatsapp_retry_window: float = 300.0
    whatsapp_workers: int = 16
    whatsapp_buttons: str = "interactive"
    whatsapp_transcribe: bool = False
    whatsapp_transcribe_model: str = "base"
    whatsapp_transcribe_language: str | None = None  # None: VOICE_LANGUAGE's; "auto": the model guesses
    state_url: str = "sqlite:///state/bridge.db"
    log_level: str = "INFO"
    metrics_token: str | None = field(default=None, repr=False)
    metrics_dir: str | None = None
    outbound_api_token: str | None = field(default=None, repr=False)
    twilio_sms_from: str | None = None
    twilio_voice_from: str | None = None

    @property
    def hold_after(self) -> float:
        """When a voice webhook stops waiting and answers with a holding phrase: no later than RASA_TIMEOUT."""
        return min(self.voice_hold_seconds, self.rasa_timeout)

    @property
    def holds(self) -> bool:
        """Holding only makes sense when the overall wait outlasts one webhook's."""
        return self.rasa_max_wait_seconds > self.hold_after

    @property
    def relay_voice_name(self) -> str | None:
        """The ConversationRelay voice: VOICE_RELAY_VOICE, else Amazon's voice for VOICE_LANGUAGE (None: Twilio's default)."""
        if self.relay_voice or self.relay_tts_provider != "Amazon":
            return self.relay_voice
        return RELAY_VOICES.get(self.voice_language)

    @property
    def rasa_origin(self) -> str:
        parts = urlsplit(self.rasa_webhook_url)
        return f"{parts.scheme}://{parts.netloc}"

    def summary(self) -> dict[str, object]:
        """What /health and `check` may show: no secret, no credential."""
        return {
            "rasa_webhook_url": redact_url(self.rasa_webhook_url),
            "action_server_url": self.action_server_url and redact_url(self.action_server_url),
            "rasa_timeout": self.rasa_timeout,
            "voice_hold_seconds": self.voice_hold_seconds,
            "rasa_max_wait_seconds": self.rasa_max_wait_seconds,
            "signature_validation": self.validate_signature,
            "shared_keys": sorted(self.shared_keys),
            "public_base_url": self.public_base_url,
            "trusted_proxies": self.trusted_proxies,
            "fallback_phone_configured": self.fallback_phone_number is not None,
            "voice_language": self.voice_language,
            "voice_name": self.voice_name,
            "voice_mode": self.voice_mode,
            "whatsapp_rest_replies": self.whatsapp_rest_mode,
            "whatsapp_rate_limit": self.whatsapp_rate_limit,
            "whatsapp_retry_window": self.whatsapp_retry_window,
            "whatsapp_workers": self.whatsapp_workers,
            "whatsapp_buttons": self.whatsapp_buttons if self.whatsapp_rest_mode else "text",
            "whatsapp_transcribe": self.whatsapp_transcribe,
            "whatsapp_transcribe_language": self.transcribe_language or "auto",
            "state_backend": self.state_url.split(":", 1)[0],
            "metrics_protected_by": "token" if self.metrics_token else "localhost",
            "outbound_api": self.outbound_enabled,
            "outbound_sms_from": self.twilio_sms_from,
            "outbound_voice_from": self.twilio_voice_from,
        }

    @property
    def language_code(self) -> str:
        """The assistant's language as ISO 639-1 (es for es-MX): WhatsApp templates and voice notes use it."""
        return _language_code(self.voice_language)

    @property
    def transcribe_language(self) -> str | None:
        """The language voice notes are transcribed in (ISO 639-1), or None to let the model guess."""
        chosen = self.whatsapp_transcribe_language or self.voice_language
        return None if chosen == "auto" else _language_code(chosen)

    @property
    def whatsapp_rest_mode(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from)

    @property
    def outbound_enabled(self) -> bool:
        """OUTBOUND_API_TOKEN turns the outbound API on (load_settings makes sure it can send)."""
        return bool(self.outbound_api_token)

    @property
    def delivers_through_rest(self) -> bool:
        """The durable queue and its workers run: for WhatsApp's REST replies, or for outbound messages."""
        return self.whatsapp_rest_mode or bool(self.outbound_enabled and self.twilio_account_sid and self.twilio_auth_token)


def redact_url(url: str) -> str:
    """The URL with its password, if any, replaced by ***: `redis://:secret@host` → `redis://:***@host`.
    Malformed URLs too (they are the ones echoed in configuration errors): everything between the user's
    name and the last @ is masked, so a password holding / or @ is masked whole."""
    start = url.find("//") + 2 if "//" in url else url.find(":") + 1
    userinfo, at, rest = url[start:].rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not (at and colon):
        return url
    return f"{url[:start]}{user}:***@{rest}"


def _listen_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if not HOSTNAME.fullmatch(value):
            raise ValueError("must be an address to listen on, such as 127.0.0.1, 0.0.0.0 or 10.0.0.11") from None
        return value


def _web_url(value: str, requirement: str) -> SplitResult:
    """An http(s) URL with a host and a usable port, else ValueError(requirement): a port that is not a number,
    or out of range, or a host urllib3 cannot parse or no resolver takes would otherwise fail at the first
    request, as a traceback."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises for a port that is not a number from 0 to 65535)
        parse_url(value)
        (parts.hostname or "").encode("idna")  # UnicodeError for a label empty or too long ("rasa..internal")
    except ValueError:
        raise ValueError(requirement) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(requirement)
    return parts


def _http_url(value: str) -> str:
    parts = _web_url(value, "must be an http(s) URL")
    return value.rstrip("/") if not parts.path.strip("/") else value


def _origin(value: str, requirement: str) -> SplitResult:
    """An http(s) URL with nothing after its host and port (a trailing slash aside), else ValueError(requirement)."""
    parts = _web_url(value, requirement)
    if parts.path.strip("/") or parts.query:
        raise ValueError(requirement)
    return parts


def _api_origin(value: str) -> str:
    """Twilio's REST origin: the client adds each API's own path ("/2010-04-01/…"), so a path here would be
    twice in every request, a 404 at the first reply rather than a line at start."""
    parts = _origin(value, "must be an http(s) origin such as https://api.twilio.com (no path)")
    return f"{parts.scheme}://{parts.netloc}"


def _public_base_url(value: str) -> str:
    parts = _origin(value, "must be an origin such as https://ivr.example.com (no path)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must be an origin such as https://ivr.example.com (no user or password: it is shown in "
                         "logs and /health)")
    return f"{parts.scheme}://{parts.netloc}"


def _seconds(limit: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        seconds = float(value)
        if not 0 < seconds <= limit:
            raise ValueError(f"must be a number of seconds above 0 and at most {limit:g}")
        return seconds
    return parse


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return number
    return parse


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _phone(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 number such as +5215512345678")
    return value


def _whatsapp_address(value: str) -> str:
    if not value.startswith("whatsapp:") or not E164.match(value.removeprefix("whatsapp:")):
        raise ValueError("must look like whatsapp:+14155238886")
    return value


def _shared_keys(value: str) -> dict[str, str]:
    keys = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        key_id, _, secret = pair.partition(":")
        if not key_id or not secret:
            raise ValueError("must be comma-separated KEY_ID:SECRET pairs")
        keys[key_id.strip()] = secret.strip()
    return keys


def _state_url(value: str) -> str:
    scheme = value.split(":", 1)[0]
    if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if scheme in ("redis", "rediss") and urlsplit(value).netloc:
        return value
    raise ValueError("must be sqlite:///path/state.db or redis://host:6379/0")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _language_code(language: str) -> str:
    return language.split("-")[0].lower()


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"must be {' or '.join(choices)}")
        return value.lower()
    return parse


def _text(value: str) -> str:
    return value


def _api_token(value: str) -> str:
    if len(value) < MIN_TOKEN_CHARACTERS:
        raise ValueError(f"must be at least {MIN_TOKEN_CHARACTERS} characters: it lets its holder message and call "
                         "your customers")
    return value


def _voice_language(value: str) -> str:
    """A language tag, in its usual case (es-mx is es-MX): the relay voices are looked up by it."""
    if not re.fullmatch(r"[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*", value):
        raise ValueError("must be a language tag such as es-MX or en-US")
    language, *rest = value.split("-")
    return "-".join([language.lower(), *(part.upper() if len(part) == 2 else part.title() if len(part) == 4 else part
                                         for part in rest)])


def _language(value: str) -> str:
    if value.lower() != "auto" and not re.fullmatch(r"[a-zA-Z]{2,3}(-[a-zA-Z0-9]+)?", value):
        raise ValueError("must be a language code such as es or es-MX, or auto to let the model guess")
    return value.lower() if value.lower() == "auto" else value


def _transcription_model(value: str) -> str:
    """A model's name (base, small, Systran/faster-whisper-small: fetched on first use) or a local directory
    (a path starting with /, . or ~), which must hold a CTranslate2 Whisper model."""
    if not value.startswith(("/", ".", "~")):
        return value
    directory = Path(value).expanduser()
    if not (directory / "model.bin").is_file():
        raise ValueError("must be a model name such as base, or a directory holding a CTranslate2 model.bin")
    return str(directory)


# Every variable the bridge reads: name, Settings field, parser (a ValueError names what is wrong).
VARIABLES: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("HOST", "host", _listen_address),
    ("PORT", "port", _count(1, 65535)),
    ("RASA_WEBHOOK_URL", "rasa_webhook_url", _http_url),
    ("ACTION_SERVER_URL", "action_server_url", _http_url),
    ("RASA_TIMEOUT", "rasa_timeout", _seconds(13)),
    ("VOICE_HOLD_SECONDS", "voice_hold_seconds", _seconds(10)),
    ("RASA_MAX_WAIT_SECONDS", "rasa_max_wait_seconds", _seconds(120)),
    ("RASA_MAX_IN_FLIGHT", "rasa_max_in_flight", _count(1, 10_000)),
    ("TWILIO_ACCOUNT_SID", "twilio_account_sid", _text),
    ("TWILIO_AUTH_TOKEN", "twilio_auth_token", _text),
    ("TWILIO_VALIDATE_SIGNATURE", "validate_signature", _boolean),
    ("TWILIO_WEBHOOK_SHARED_KEYS", "shared_keys", _shared_keys),
    ("PUBLIC_BASE_URL", "public_base_url", _public_base_url),
    ("TRUSTED_PROXIES", "trusted_proxies", _count(0, 5)),
    ("FALLBACK_PHONE_NUMBER", "fallback_phone_number", _phone),
    ("VOICE_LANGUAGE", "voice_language", _voice_language),
    ("VOICE_NAME", "voice_name", _text),
    ("VOICE_GREETING", "voice_greeting", _text),
    ("VOICE_MAX_SILENCES", "voice_max_silences", _count(0, 5)),
    ("VOICE_MODE", "voice_mode", _one_of(*VOICE_MODES)),
    ("VOICE_SILENCE_SECONDS", "voice_silence_seconds", _seconds(60)),
    ("VOICE_RELAY_TTS_PROVIDER", "relay_tts_provider", _text),
    ("VOICE_RELAY_VOICE", "relay_voice", _text),
    ("VOICE_RELAY_TRANSCRIPTION_PROVIDER", "relay_transcription_provider", _text),
    ("VOICE_RELAY_INTERRUPTIBLE", "relay_interruptible", _one_of(*RELAY_INTERRUPTIBLE)),
    ("TWILIO_WHATSAPP_FROM", "twilio_whatsapp_from", _whatsapp_address),
    ("TWILIO_API_BASE_URL", "twilio_api_base_url", _api_origin),
    ("WHATSAPP_RATE_LIMIT", "whatsapp_rate_limit", _count(1, 10_000)),
    ("WHATSAPP_RETRY_WINDOW", "whatsapp_retry_window", _seconds(86_400)),
    ("WHATSAPP_WORKERS", "whatsapp_workers", _count(1, 64)),
    ("WHATSAPP_BUTTONS", "whatsapp_buttons", _one_of(*WHATSAPP_BUTTON_STYLES)),
    ("WHATSAPP_TRANSCRIBE", "whatsapp_transcribe", _boolean),
    ("WHATSAPP_TRANSCRIBE_MODEL", "whatsapp_transcribe_model", _transcription_model),
    ("WHATSAPP_TRANSCRIBE_LANGUAGE", "whatsapp_transcribe_language", _language),
    ("STATE_URL", "state_url", _state_url),
    ("LOG_LEVEL", "log_level", _log_level),
    ("METRICS_TOKEN", "metrics_token", _text),
    ("PROMETHEUS_MULTIPROC_DIR", "metrics_dir", _text),
    ("OUTBOUND_API_TOKEN", "outbound_api_token", _api_token),
    ("TWILIO_SMS_FROM", "twilio_sms_from", _phone),
    ("TWILIO_VOICE_FROM", "twilio_voice_from", _phone),
)


def load_settings(environ: Mapping[str, str], workdir: Path | None = None) -> Settings:
    """Build Settings from environment variables; raise ConfigError naming every bad one."""
    settings, problems = read_settings(environ, workdir)
    if problems:
        raise ConfigError(problems)
    return settings


def read_settings(environ: Mapping[str, str], workdir: Path | None = None) -> tuple[Settings, list[str]]:
    """Settings from the valid variables (defaults stand in for the bad ones), and one line per bad one:
    `check` reports every problem and still tests what it can."""
    problems: list[str] = []
    values: dict[str, object] = {}
    for name, attr, parse in VARIABLES:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[attr] = parse(raw)
        except ValueError as exc:
            detail = str(exc) if not str(exc).startswith(("could not convert", "invalid literal")) else "is not a number"
            problems.append(f"{name}: {detail}" if attr in SECRET_FIELDS else f"{name}={redact_url(raw)[:40]!r}: {detail}")

    if "state_url" not in values and workdir is not None:
        values["state_url"] = f"sqlite:///{workdir / 'state' / 'bridge.db'}"
    validate = values.get("validate_signature", True)
    if validate and not values.get("twilio_auth_token"):
        problems.append(
            "TWILIO_AUTH_TOKEN: required to check Twilio's signatures "
            "(set TWILIO_VALIDATE_SIGNATURE=false only for local experiments)"
        )
    problems += _outbound_problems(values)
    if values.get("whatsapp_transcribe") and find_spec("faster_whisper") is None:
        problems.append("WHATSAPP_TRANSCRIBE: on needs the transcription engine: ./install_twilio_server.sh --transcribe")
    return Settings(**values), problems  # type: ignore[arg-type]


def _outbound_problems(values: Mapping[str, object]) -> list[str]:
    """The outbound API sends through Twilio's REST API, and an outbound call needs a public voice webhook."""
    if not values.get("outbound_api_token"):
        return []
    problems = []
    if not values.get("twilio_auth_token") and values.get("validate_signature") is False:  # else reported already
        problems.append("TWILIO_AUTH_TOKEN: required with OUTBOUND_API_TOKEN (outbound messages and calls go "
                        "through Twilio's REST API)")
    if not values.get("twilio_account_sid"):
        problems.append("TWILIO_ACCOUNT_SID: required with OUTBOUND_API_TOKEN (outbound messages and calls go "
                        "through Twilio's REST API)")
    if values.get("twilio_voice_from") and not values.get("public_base_url"):
        problems.append("PUBLIC_BASE_URL: required with TWILIO_VOICE_FROM (Twilio fetches an outbound call's "
                        "voice webhook from it)")
    return problems
