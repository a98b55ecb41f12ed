"""One transcriber per host: a process of its own that loads Whisper once and hears every worker's voice notes.

A worker that loaded the model itself would hold about 230 MB of it, once per process (three on two
cores), and would decode untrusted audio (PyAV, CTranslate2) beside the calls it serves, where a crash
takes those calls with it. Instead the first worker that needs a note heard starts this process
(`python -m twilio_bridge.whatsapp.hearing`), and every worker on the host sends it the audio over a
Unix socket in a directory private to the user, and waits for the words.

The process:
* holds the host's lock for its settings (model, language and this code's place): one runs at a time,
  and one started in a race waits briefly for the lock and leaves;
* hears one note at a time (a transcription already takes every core), the others waiting on the socket;
* runs below the webhooks' priority: a voice note waits for a call's turn, never the other way round;
* loads the model on the first note, and on the next one again if that failed;
* ends with the worker that started it: a reload starts a new one with the new settings.

A note whose transcriber ended while hearing it is sent once more, to a new one; if that one ends too,
the note is the engine's failure (Unheard("engine")), and the user is asked to write.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..limits import WHATSAPP_MEDIA_BYTES
from ..logs import configure_logging, log
from .voice_notes import Heard, Transcriber, Unheard

ROOT = Path(__file__).resolve().parent.parent.parent  # where `twilio_bridge` is imported from
NICENESS = 10  # the transcriber's priority below the webhooks'
BACKLOG = 64  # notes that may wait on the socket while one is heard
START_TIMEOUT = 30.0  # seconds a worker waits for a transcriber it started to listen
LOCK_WAIT = 5.0  # seconds a transcriber started in a race waits for the one before it to end
HEAR_TIMEOUT = 600.0  # seconds a worker waits for its note's words, queued notes' included
RECEIVE_TIMEOUT = 30.0  # seconds the transcriber waits for a note's bytes once a worker has connected
PARENT_CHECK = 1.0  # seconds between the transcriber's checks that the worker that started it is alive
AUDIO_LENGTH = struct.Struct("!Q")
ANSWER_LENGTH = struct.Struct("!I")


class TranscriberEnded(Exception):
    """The transcriber's connection closed before its answer: the process ended while hearing."""


class HostTranscriber:
    """A worker's way to the host's transcriber: `transcribe(audio)` as `Transcriber` does, the process
    started when none answers. `directory` holds the socket (default: one in the system's temporary
    directory, private to the user)."""

    def __init__(self, model: str, language: str | None, log_level: str = "INFO", directory: Path | None = None):
        self.model, self.language, self.log_level = model, language, log_level
        self.directory = directory or Path(tempfile.gettempdir()) / f"twilio-bridge-{os.getuid()}"
        settings = "\0".join((model, language or "", str(ROOT), sys.executable))
        self.socket_path = self.directory / f"transcriber-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.sock"
        self._starting = threading.Lock()
        self._started: subprocess.Popen[bytes] | None = None

    def transcribe(self, audio: bytes) -> Heard:
        """What the note says. Raises Unheard: undecodable, too_long, empty or engine."""
        try:
            return self._ask(audio)
        except TranscriberEnded:
            pass
        try:
            return self._ask(audio)
        except TranscriberEnded as exc:
            raise Unheard("engine", f"the transcriber ended twice while hearing the note ({exc})") from exc

    def _ask(self, audio: bytes) -> Heard:
        with self._connected() as connection:
            try:
                connection.sendall(AUDIO_LENGTH.pack(len(audio)) + audio)
                answer = json.loads(_receive(connection, ANSWER_LENGTH.unpack(_receive(connection, ANSWER_LENGTH.size))[0]))
            except socket.timeout as exc:
                raise Unheard("engine", f"no answer from the transcriber in {HEAR_TIMEOUT:.0f} s") from exc
            except OSError as exc:  # a reset, or a broken pipe while sending
                raise TranscriberEnded(type(exc).__name__) from exc
        if "unheard" in answer:
            raise Unheard(answer["unheard"], answer.get("detail", ""))
        return Heard(answer["text"], answer["language"], answer["seconds"], answer["took"])

    def _connected(self) -> socket.socket:
        """A connection to the host's transcriber, started if none listens."""
        deadline = time.monotonic() + START_TIMEOUT
        started: list[subprocess.Popen[bytes]] = []  # by this call
        while (connection := self._connect()) is None:
            process, new = self._transcriber_process()
            started += [process] if new else []
            failed = [process.returncode for process in started if process.poll()]
            if failed:  # 0 is a transcriber that lost a race: the winner is about to listen
                raise Unheard("engine", f"the transcriber exited with {failed[0]} (its log says why)")
            if time.monotonic() > deadline:
                raise Unheard("engine", f"the transcriber did not listen within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        return connection

    def _connect(self) -> socket.socket | None:
        """A connection, or None when no transcriber listens."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(HEAR_TIMEOUT)
        try:
            connection.connect(str(self.socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            connection.close()
            return None
        except OSError as exc:  # a queue full for HEAR_TIMEOUT, a path too long for a socket...
            connection.close()
            raise Unheard("engine", f"{self.socket_path}: {exc}") from exc
        return connection

    def _transcriber_process(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The transcriber this process started last while it runs (starting, or waiting for the lock),
        else a new one; and whether it is new. `poll` notices its end and reaps it (no thread waits for
        it: `poll` would answer "running" meanwhile). One just killed may count as running a moment
        longer, while its threads end: the caller asks again, and gets a new one."""
        _private(self.directory)
        with self._starting:
            if self._started is not None and self._started.poll() is None:
                return self._started, False
            command = [sys.executable, "-m", "twilio_bridge.whatsapp.hearing", "--socket", str(self.socket_path),
                       "--model", self.model, "--language", self.language or "", "--log-level", self.log_level,
                       "--parent", str(os.getpid())]
            # the workers count what it hears: it writes no metrics files of its own
            environment = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
            environment["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
            try:
                self._started = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=environment)
            except OSError as exc:
                raise Unheard("engine", f"starting the transcriber: {exc}") from exc
        log.info("whatsapp.transcriber.starting", pid=self._started.pid, socket=str(self.socket_path))
        return self._started, True


def _private(directory: Path) -> None:
    """`directory` made if missing; refused (Unheard("engine")) unless only this user may enter it."""
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        status = directory.lstat()
    except OSError as exc:
        raise Unheard("engine", f"{directory}: {exc.strerror}") from exc
    if not directory.is_dir() or directory.is_symlink() or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise Unheard("engine", f"{directory} is not a directory private to this user: its socket would be open to others")


def _receive(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise TranscriberEnded(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def serve(socket_path: Path, model: str, language: str | None, parent: int) -> int:
    """Hear notes on `socket_path` while `parent` lives; 0 at once if another transcriber keeps the lock."""
    lock = socket_path.with_suffix(".lock").open("a")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline or os.getppid() != parent:
                log.info("whatsapp.transcriber.another_runs", socket=str(socket_path))
                return 0
            time.sleep(0.05)
    os.nice(NICENESS)
    socket_path.unlink(missing_ok=True)  # a transcriber before this one ended without removing it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path))
        listener.listen(BACKLOG)
        listener.settimeout(PARENT_CHECK)
        transcriber = Transcriber(model, language)
        log.info("whatsapp.transcriber.listening", model=model, language=language or "auto", parent=parent)
        while os.getppid() == parent:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            with connection:
                _hear_one(connection, transcriber)
        socket_path.unlink(missing_ok=True)
    log.info("whatsapp.transcriber.ended", reason="the worker that started it ended")
    return 0


def _hear_one(connection: socket.socket, transcriber: Transcriber) -> None:
    connection.settimeout(RECEIVE_TIMEOUT)
    try:
        size = AUDIO_LENGTH.unpack(_receive(connection, AUDIO_LENGTH.size))[0]
        if size > WHATSAPP_MEDIA_BYTES:
            raise Unheard("too_big", f"{size} bytes")
        heard = transcriber.transcribe(_receive(connection, size))
        answer = {"text": heard.text, "language": heard.language, "seconds": heard.seconds, "took": heard.took}
    except Unheard as exc:
        answer = {"unheard": exc.reason, "detail": exc.detail}
    except (OSError, TranscriberEnded) as exc:  # the worker gave up, or sent half a note
        log.warning("whatsapp.transcriber.note_lost", error=type(exc).__name__)
        return
    encoded = json.dumps(answer).encode()
    try:
        connection.sendall(ANSWER_LENGTH.pack(len(encoded)) + encoded)
    except OSError:
        log.warning("whatsapp.transcriber.answer_lost")  # the worker stopped waiting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The host's transcriber of WhatsApp voice notes (started by the bridge's workers).")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--language", default="")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--parent", type=int, required=True, help="the worker whose end ends this process")
    arguments = parser.parse_args(argv)
    configure_logging(arguments.log_level)
    return serve(arguments.socket, arguments.model, arguments.language or None, arguments.parent)


if __name__ == "__main__":
    sys.exit(main())
