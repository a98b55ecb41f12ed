"""One transcriber per host: a process of its own that loads Whisper once and hears every worker's voice notes.

A worker that loaded the model itself would hold about 230 MB of it, once per process (three on two
cores), and would decode untrusted audio (PyAV, CTranslate2) beside the calls it serves, where a crash
takes those calls with it. Instead the first worker that needs a note heard starts this process
(`python -m twilio_bridge.whatsapp.hearing`), and every worker on the host sends it the audio over a
Unix socket and waits for the words. The socket's directory must be the user's alone, and its listener
the user's own, before a worker sends it anything.

The process:
* holds the host's lock for its settings (model, language, this code's place and PROTOCOL): one runs
  at a time, and one started in a race waits briefly for the lock and leaves;
* hears one note at a time (a transcription already takes every core), the others waiting on the
  socket; a note whose worker stopped waiting is dropped unheard;
* runs below the webhooks' priority: when the cores are short, the calls' turns come first;
* loads the model on the first note, and on the next one again if that failed;
* gets none of the bridge's settings (its credentials among them) from the worker's environment;
* ends with the worker that started it, or when its socket or lock file is removed or replaced.

A worker learns when its note is being heard (HEARING). A note whose transcriber ended before that
point, queued or arriving as it ended, is sent again without limit until HEAR_TIMEOUT; one whose
transcriber ended while hearing it is sent once more, to a new one, and if that one ends too, the note is
the engine's failure (Unheard("engine")), and the user is asked to write.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..config import VARIABLES
from ..limits import WHATSAPP_MEDIA_BYTES
from ..logs import configure_logging, log
from .voice_notes import Heard, Transcriber, Unheard

ROOT = Path(__file__).resolve().parent.parent.parent  # where `twilio_bridge` is imported from
PROTOCOL = 2  # in the socket's name: a worker never talks to a transcriber that speaks another
NICENESS = 10  # the transcriber's priority below the webhooks'
BACKLOG = 512  # notes that may wait on the socket while one is heard (the kernel caps it at somaxconn)
START_TIMEOUT = 30.0  # seconds a worker waits for a transcriber it started to listen
LOCK_WAIT = 5.0  # seconds a transcriber started in a race waits for the one before it to end
HEAR_TIMEOUT = 600.0  # seconds a worker waits for its note's words, queued notes' and new transcribers' included
RECEIVE_TIMEOUT = 30.0  # seconds the transcriber waits for a note's bytes once a worker has connected
PARENT_CHECK = 1.0  # seconds between the transcriber's checks that it should go on
RETRY_PAUSE = 0.02  # seconds between a worker's attempts to reach a transcriber
HEARING = b"\x01"  # the transcriber has the whole note and starts on it
AUDIO_LENGTH = struct.Struct("!Q")
ANSWER_LENGTH = struct.Struct("!I")
PEER = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid
NOT_PASSED_ON = frozenset(name for name, _, _ in VARIABLES) | {"PROMETHEUS_MULTIPROC_DIR"}


class NotYetHeard(Exception):
    """The connection ended before the transcriber started on the note: it was queued, or came as the
    transcriber ended. Sending it again costs nothing."""


class TranscriberEnded(Exception):
    """The connection ended while the transcriber heard the note: it died hearing it."""


class HostTranscriber:
    """A worker's way to the host's transcriber: `transcribe(audio)` as `Transcriber` does, the process
    started when none listens. `directory` holds the socket (default: one in the system's temporary
    directory, private to the user)."""

    def __init__(self, model: str, language: str | None, log_level: str = "INFO", directory: Path | None = None):
        self.model, self.language, self.log_level = model, language, log_level
        self.directory = directory or Path(tempfile.gettempdir()) / f"twilio-bridge-{os.getuid()}"
        settings = "\0".join((model, language or "", str(ROOT), sys.executable, str(PROTOCOL)))
        self.socket_path = self.directory / f"transcriber-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.sock"
        self._starting = threading.Lock()
        self._started: subprocess.Popen[bytes] | None = None

    def transcribe(self, audio: bytes) -> Heard:
        """What the note says. Raises Unheard: undecodable, too_long, empty or engine."""
        if self._started is not None:
            self._started.poll()  # reaps a transcriber that lost a race to start, or ended
        deadline = time.monotonic() + HEAR_TIMEOUT
        ended = 0
        while True:
            try:
                return self._ask(audio, deadline)
            except NotYetHeard:
                time.sleep(RETRY_PAUSE)
            except TranscriberEnded as exc:
                ended += 1
                if ended == 2:
                    raise Unheard("engine", f"the transcriber ended twice while hearing the note ({exc})") from exc
            if time.monotonic() > deadline:
                raise Unheard("engine", f"not heard within {HEAR_TIMEOUT:.0f} s")

    def _ask(self, audio: bytes, deadline: float) -> Heard:
        with self._connected(deadline) as connection:
            try:
                connection.sendall(AUDIO_LENGTH.pack(len(audio)) + audio)
                started = connection.recv(len(HEARING))
            except socket.timeout as exc:
                raise Unheard("engine", f"not heard within {HEAR_TIMEOUT:.0f} s") from exc
            except OSError as exc:  # reset while queued
                raise NotYetHeard(type(exc).__name__) from exc
            if started != HEARING:
                raise NotYetHeard("closed before hearing it")
            try:
                size = ANSWER_LENGTH.unpack(_receive(connection, ANSWER_LENGTH.size))[0]
                return _heard(json.loads(_receive(connection, size)))
            except socket.timeout as exc:
                raise Unheard("engine", f"not heard within {HEAR_TIMEOUT:.0f} s") from exc
            except (OSError, EOFError) as exc:
                raise TranscriberEnded(str(exc) or type(exc).__name__) from exc
            except ValueError as exc:
                raise Unheard("engine", "the transcriber's answer could not be read") from exc

    def _connected(self, deadline: float) -> socket.socket:
        """A connection to the host's transcriber, started if none listens."""
        start_by = min(deadline, time.monotonic() + START_TIMEOUT)
        started: list[subprocess.Popen[bytes]] = []  # by this call
        while True:
            try:
                return self._connect(deadline)
            except (FileNotFoundError, ConnectionRefusedError):  # none listens
                process, new = self._transcriber_process()
                started += [process] if new else []
                failed = [process.returncode for process in started if process.poll()]
                if failed:  # 0 is a transcriber that lost a race: the winner is about to listen
                    raise Unheard("engine", f"the transcriber exited with {failed[0]} (its log says why)")
                if time.monotonic() > start_by:
                    raise Unheard("engine", f"the transcriber did not listen within {START_TIMEOUT:.0f} s")
            except BlockingIOError:  # its queue is full: wait for room
                if time.monotonic() > deadline:
                    raise Unheard("engine", f"the transcriber's queue stayed full for {HEAR_TIMEOUT:.0f} s")
            except OSError as exc:  # out of descriptors, a path too long for a socket...
                raise Unheard("engine", f"{self.socket_path}: {exc}") from exc
            time.sleep(RETRY_PAUSE)

    def _connect(self, deadline: float) -> socket.socket:
        """A connection to the socket's listener, once the directory and the listener are this user's."""
        _private(self.directory)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            connection.connect(str(self.socket_path))
            _, uid, _ = PEER.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER.size))
            if uid != os.getuid():
                raise Unheard("engine", f"{self.socket_path} is another user's (uid {uid}): nothing is sent to it")
        except BaseException:
            connection.close()
            raise
        return connection

    def _transcriber_process(self) -> tuple[subprocess.Popen[bytes], bool]:
        """The transcriber this process started last while it runs (starting, or waiting for the lock),
        else a new one; and whether it is new. `poll` notices its end and reaps it (no thread waits for
        it: `poll` would answer "running" meanwhile). One just killed may count as running a moment
        longer, while its threads end: the caller asks again, and gets a new one."""
        with self._starting:
            if self._started is not None and self._started.poll() is None:
                return self._started, False
            command = [sys.executable, "-m", "twilio_bridge.whatsapp.hearing", "--socket", str(self.socket_path),
                       "--model", self.model, "--language", self.language or "", "--log-level", self.log_level,
                       "--parent", str(os.getpid())]
            # none of the bridge's settings, and no metrics files: the workers count what it hears
            environment = {name: value for name, value in os.environ.items() if name not in NOT_PASSED_ON}
            environment["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
            try:
                process = self._started = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=environment)
            except OSError as exc:
                raise Unheard("engine", f"starting the transcriber: {exc}") from exc
        log.info("whatsapp.transcriber.starting", pid=process.pid, socket=str(self.socket_path))
        return process, True


def _private(directory: Path) -> None:
    """`directory` made if missing; refused (Unheard("engine")) unless only this user may enter it."""
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        status = directory.lstat()  # a symbolic link's mode lets everyone in: refused below
    except OSError as exc:
        raise Unheard("engine", f"{directory}: {exc.strerror}") from exc
    if not directory.is_dir() or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise Unheard("engine", f"{directory} is not a directory private to this user: its socket would be open to others")


def _heard(answer: Any) -> Heard:
    """The transcriber's answer read; ValueError when it is not one."""
    try:
        if "unheard" in answer:
            raise Unheard(str(answer["unheard"]), str(answer.get("detail", "")))
        return Heard(str(answer["text"]), str(answer["language"]), float(answer["seconds"]), float(answer["took"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an answer: {exc}") from exc


def _receive(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def serve(socket_path: Path, model: str, language: str | None, parent: int) -> int:
    """Hear notes on `socket_path` until `why_end` says why not; 0 at once if another keeps the lock."""
    lock_path = socket_path.with_suffix(".lock")
    lock = lock_path.open("a")
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
    # The worker's own niceness plus NICENESS, not the starting thread's (a delivery thread runs nicer: workers.py)
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, parent) + NICENESS)
    socket_path.unlink(missing_ok=True)  # a transcriber before this one ended without removing it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path))
        listener.listen(BACKLOG)
        listener.settimeout(PARENT_CHECK)
        ours = (_inode(socket_path), os.fstat(lock.fileno()).st_ino)
        transcriber = Transcriber(model, language)
        log.info("whatsapp.transcriber.listening", model=model, language=language or "auto", parent=parent)
        while (reason := why_end(parent, socket_path, lock_path, ours)) is None:
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            with connection:
                _hear_one(connection, transcriber)
        if _inode(socket_path) == ours[0]:
            socket_path.unlink()
    log.info("whatsapp.transcriber.ended", reason=reason)
    return 0


def why_end(parent: int, socket_path: Path, lock_path: Path, ours: tuple[int | None, int]) -> str | None:
    """Why the transcriber should end now, or None. Workers that find no socket start another, which
    could not take a lock still held: so a socket or lock file removed or replaced ends this one."""
    if os.getppid() != parent:
        return "the worker that started it ended"
    if (_inode(socket_path), _inode(lock_path)) != ours:
        return "its socket or lock file was removed or replaced"
    return None


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _hear_one(connection: socket.socket, transcriber: Transcriber) -> None:
    connection.settimeout(RECEIVE_TIMEOUT)
    try:
        size = AUDIO_LENGTH.unpack(_receive(connection, AUDIO_LENGTH.size))[0]
        audio = _receive(connection, size) if size <= WHATSAPP_MEDIA_BYTES else None
        if _gone(connection):
            log.info("whatsapp.transcriber.note_dropped", reason="its worker stopped waiting")
            return
        connection.sendall(HEARING)
        try:
            if audio is None:
                raise Unheard("too_big", f"{size} bytes")
            heard = transcriber.transcribe(audio)
            answer: dict[str, Any] = {"text": heard.text, "language": heard.language, "seconds": heard.seconds,
                                      "took": heard.took}
        except Unheard as exc:
            answer = {"unheard": exc.reason, "detail": exc.detail}
        encoded = json.dumps(answer).encode()
        connection.sendall(ANSWER_LENGTH.pack(len(encoded)) + encoded)
    except (OSError, EOFError) as exc:  # the worker sent half a note, or stopped waiting
        log.warning("whatsapp.transcriber.note_lost", error=str(exc) or type(exc).__name__)


def _gone(connection: socket.socket) -> bool:
    """Whether the worker closed its end: it sends nothing after the note, so its end is all there is to read."""
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""


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
