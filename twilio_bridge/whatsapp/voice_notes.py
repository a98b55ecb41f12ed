"""WhatsApp voice notes heard offline: the audio fetched from Twilio safely, then transcribed on this machine.

The engine is faster-whisper (installed by `./install_twilio_server.sh --transcribe`), imported only
when WHATSAPP_TRANSCRIBE=on, and only by the host's transcriber process (`hearing.py`): it loads the
model on the first voice note and keeps it, and hears one note at a time, because a transcription
already takes every core and several at once would only each be slower and multiply the memory.
"""
from __future__ import annotations

import gc
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests

from .. import metrics
from ..limits import WHATSAPP_MEDIA_BYTES
from ..logs import log

FETCH_TIMEOUT = 15.0
MAX_REDIRECTS = 3
SAMPLE_RATE = 16_000  # what Whisper listens at
MAX_SECONDS = 300.0  # a longer note would hold a worker for minutes: the user is asked to write instead
BEAM_SIZE = 5
REMEMBERED = 64  # transcripts kept per process, for a message retried while Rasa is down


class Unheard(Exception):
    """A voice note the bridge could not hear; `reason` is what the logs and metrics count."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Heard:
    text: str
    language: str
    seconds: float  # of audio
    took: float  # seconds spent transcribing


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, f"{(parts.hostname or '').lower()}:{port}"


class MediaFetcher:
    """Downloads an attachment with the account's credentials, only from Twilio's own API origin.

    A media URL comes from the webhook's form: sent anywhere else, the credentials (and a request from
    inside the bridge's network) would go wherever a forged URL points. Twilio answers with a redirect
    to its media storage, which is followed without the credentials.
    """

    def __init__(self, api_base_url: str, account_sid: str, auth_token: str,
                 limit: int = WHATSAPP_MEDIA_BYTES, timeout: float = FETCH_TIMEOUT):
        self.api_origin = origin(api_base_url)
        self.auth = (account_sid, auth_token)
        self.limit = limit
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or .netrc credentials from the environment

    def fetch(self, url: str) -> bytes:
        """The attachment's bytes. Raises Unheard: foreign_host, too_big or download."""
        try:
            foreign = origin(url) != self.api_origin
        except ValueError:  # a port out of range, brackets that do not close: no origin at all
            foreign = True
        if foreign:
            raise Unheard("foreign_host", url[:200])
        try:
            answer = self.session.get(url, auth=self.auth, allow_redirects=False, stream=True, timeout=self.timeout)
            for _ in range(MAX_REDIRECTS):
                if not answer.is_redirect:
                    break
                location = urljoin(answer.url, answer.headers.get("Location", ""))
                answer.close()
                if urlsplit(location).scheme not in ("http", "https"):
                    raise Unheard("download", "redirected to a non-http URL")
                answer = self.session.get(location, allow_redirects=False, stream=True, timeout=self.timeout)
            with answer:
                if answer.status_code != 200:
                    raise Unheard("download", f"HTTP {answer.status_code}")
                return self._read(answer)
        except requests.RequestException as exc:
            raise Unheard("download", type(exc).__name__) from exc

    def _read(self, answer: requests.Response) -> bytes:
        declared = answer.headers.get("Content-Length", "")
        # ASCII digits only ('²' passes isdigit(), and int() refuses it), and few enough for int()
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > self.limit):
            raise Unheard("too_big", f"{declared} bytes")
        data = bytearray()
        for chunk in answer.iter_content(64 * 1024):
            data += chunk
            if len(data) > self.limit:
                raise Unheard("too_big", f"more than {self.limit} bytes")
        return bytes(data)


class Transcribes(Protocol):
    def transcribe(self, audio: bytes) -> Heard:
        """What the note says. Raises Unheard."""


class Transcriber:
    """Whisper through faster-whisper: `model` is a name (downloaded once from Hugging Face) or a local
    CTranslate2 model directory; `language` an ISO 639-1 code, or None to let the model guess (a small
    model guesses short notes badly: the assistant's own language is the better default)."""

    def __init__(self, model: str, language: str | None):
        self.model_name = model
        self.language = language
        self._model: Any = None
        self._lock = threading.Lock()

    def transcribe(self, audio: bytes) -> Heard:
        """What the note says. Raises Unheard: undecodable, too_long, empty or engine."""
        try:
            _refuse_long(audio)  # before decoding: hours of Opus fit in 16 MB, and would fill the memory
            samples = _decoded(audio)
        except Unheard:
            raise
        except ImportError as exc:
            raise Unheard("engine", "faster-whisper is not installed (./install_twilio_server.sh --transcribe)") from exc
        except Exception as exc:  # PyAV raises a dozen kinds for a file it cannot read
            raise Unheard("undecodable", type(exc).__name__) from exc
        seconds = len(samples) / SAMPLE_RATE
        with self._lock:
            model = self._loaded()
            started = time.monotonic()
            try:
                segments, info = model.transcribe(samples, language=self.language, beam_size=BEAM_SIZE,
                                                  vad_filter=True, condition_on_previous_text=False)
                text = " ".join(segment.text.strip() for segment in segments).strip()
            except Exception as exc:
                raise Unheard("engine", f"{type(exc).__name__}: {str(exc)[:120]}") from exc
            if not text:
                raise Unheard("empty")
            return Heard(text, info.language, round(seconds, 2), round(time.monotonic() - started, 3))

    def _loaded(self) -> Any:
        if self._model is None:
            try:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(self.model_name, device="cpu", compute_type="int8")
            except Exception as exc:
                raise Unheard("engine", f"loading {self.model_name}: {type(exc).__name__}: {str(exc)[:120]}") from exc
        return self._model


def _refuse_long(audio: bytes) -> None:
    """Raise Unheard("too_long") when the container says the audio lasts more than MAX_SECONDS."""
    import av

    with av.open(io.BytesIO(audio)) as container:
        seconds = (container.duration or 0) / av.time_base
    if seconds > MAX_SECONDS:
        raise Unheard("too_long", f"{seconds:.0f} s")


def _decoded(audio: bytes) -> Any:
    """The note as Whisper hears it (mono float32 at SAMPLE_RATE, as faster-whisper's decode_audio makes it),
    counted as it is decoded: a container may understate its length (chained Ogg streams each start their
    clock again, so a hundred notes one after the other say they last one). Raises Unheard("too_long")
    once past MAX_SECONDS, before the samples of hours fill the memory."""
    import av
    import numpy as np

    limit = int(MAX_SECONDS * SAMPLE_RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks, count = [], 0
    with av.open(io.BytesIO(audio), metadata_errors="ignore") as container:
        for frame in _frames(container.decode(audio=0)):
            for resampled in resampler.resample(frame):
                chunk = resampled.to_ndarray().reshape(-1)
                count += len(chunk)
                if count > limit:
                    raise Unheard("too_long", f"more than {MAX_SECONDS:.0f} s")
                chunks.append(chunk)
    del resampler
    gc.collect()  # PyAV's resampler holds memory in cycles (faster-whisper issue 390): freed now, not later
    return np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, dtype=np.float32)


def _frames(decoded: Iterator[Any]) -> Iterator[Any]:
    """The frames PyAV could decode, then None (which flushes the resampler), as decode_audio reads them."""
    import av

    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            break
        except av.error.InvalidDataError:
            continue
        frame.pts = None  # a chained stream's clock starts again: its timestamps are not to be checked
        yield frame
    yield None


class VoiceNotes:
    """Hears the first audio attachment of a message: fetched, transcribed, logged and counted.

    The last few transcripts are kept by media URL: while Rasa is down a message is retried for
    minutes, and its note need not be transcribed again each time.
    """

    def __init__(self, fetcher: MediaFetcher, transcriber: Transcribes, remember: int = REMEMBERED):
        self.fetcher = fetcher
        self.transcriber = transcriber
        self.remember = remember
        self._heard: OrderedDict[str, Heard] = OrderedDict()
        self._lock = threading.Lock()

    def hear(self, url: str) -> Heard:
        """What the voice note at `url` says. Raises Unheard, after logging and counting why."""
        with self._lock:
            if url in self._heard:
                return self._heard[url]
        try:
            audio = self.fetcher.fetch(url)
            heard = self.transcriber.transcribe(audio)
        except Unheard as exc:
            metrics.voice_note_heard(exc.reason)
            log.warning("whatsapp.voice_note.unheard", reason=exc.reason, detail=exc.detail)
            raise
        metrics.voice_note_heard("transcribed", heard.seconds, heard.took)
        log.info("whatsapp.voice_note.heard", audio_seconds=heard.seconds, transcribe_ms=round(heard.took * 1000),
                 language=heard.language, characters=len(heard.text))
        with self._lock:
            self._heard[url] = heard
            while len(self._heard) > self.remember:
                self._heard.popitem(last=False)
        return heard


def voice_note_url(media: list[dict[str, str]]) -> str | None:
    """The first audio attachment's URL (WhatsApp voice notes are audio/ogg; AMR, MP3, AAC... also count)."""
    return next((m["url"] for m in media if m.get("content_type", "").startswith("audio/")), None)
