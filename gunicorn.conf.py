"""gunicorn settings for the bridge: `gunicorn -c gunicorn.conf.py twilio_voice_server:app`.

Worker model: gthread, one process per core plus one (GUNICORN_WORKERS; 3 on 2 cores) x 250 threads.
A webhook spends nearly all its time waiting for Rasa; a synchronous worker per call would need a
process per call in flight. Each process's threads take turns on its one GIL, and a turn's writes to
the state store wait for it most: at 500 calls on 2 cores, 3 processes carried 445-459 turns/s in five
quiet runs where 2 carried 416-450, for about 60 MB more (bench/README.md, "fifth session").
Threads must cover the calls in flight (with 50, 200 calls made 83 turns/s instead of 169). gthread
against gevent, measured with bench/worker_models.py (figures in bench/README.md): below saturation
gthread adds less to each turn (the default SQLite store blocks gevent's whole hub while it waits for
the file's lock), needs no monkey-patching of the app, its libraries or the WhatsApp delivery threads,
and no C extension; gevent carries more turns once the box is out of CPU, so `-k gevent` on the
command line remains an option for a Redis-backed, CPU-bound deployment. The worker is gthread's, but
for one thing (twilio_bridge/web/worker.py): the thread that answered a request on a kept-alive
connection serves the next one itself if it comes within 20 ms and the worker has threads to spare,
instead of passing it through the main loop and back.

Relay mode (VOICE_MODE=relay) needs nothing here: a ConversationRelay WebSocket is upgraded in a
gthread thread and then carried by one asyncio loop per worker (twilio_bridge/voice/relay/server.py),
so calls held do not use these threads (1000 held on 2 cores: bench/README.md, "Relay mode").

Timeouts, against Twilio's 15 s: a voice webhook answers within VOICE_HOLD_SECONDS (holding phrase)
or RASA_TIMEOUT (at most 13 s), so no request handler runs near `timeout`, which only catches a
worker that has stopped answering its heartbeat. A held turn's Rasa request may run on in the
worker for RASA_MAX_WAIT_SECONDS; `graceful_timeout` lets it finish on a reload or stop.

Reload without dropping a call: `kill -HUP <master pid>` (or `systemctl reload`) re-reads this
file and twilio.env, starts new workers, and lets the old ones finish their webhooks and held
turns for up to `graceful_timeout` seconds. Held turns live in the state store, so a poll that
lands on a new worker finds its answer. A twilio.env with bad settings is refused on reload: each is
named in one line, and the new workers keep the settings (and the address, the counts) they had.

Logs: gunicorn's own lines go through structlog, as JSON lines off a terminal, like the app's.
Metrics: each worker writes to PROMETHEUS_MULTIPROC_DIR (unless set, a directory in the system's
temporary directory named after the master's pid, removed at exit), emptied at start; a worker's
live gauges are dropped when it exits.
"""
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

from dotenv import dotenv_values

sys.path.insert(0, str(Path(__file__).resolve().parent))
from twilio_bridge.config import read_settings  # noqa: E402  (needs the line above)
from twilio_bridge.logs import gunicorn_logconfig  # noqa: E402

FROM_FILE = "TWILIO_BRIDGE_FROM_ENV_FILE"  # the names twilio.env set, which a reload may change


def _load_env_file(path):
    """twilio.env, under variables already set in the environment; on a reload, its new values too."""
    from_file = set(filter(None, os.environ.get(FROM_FILE, "").split(",")))
    values = {name: value for name, value in dotenv_values(path).items() if value is not None}
    for name in from_file - set(values):
        os.environ.pop(name, None)
    for name, value in values.items():
        if name not in os.environ or name in from_file:
            os.environ[name] = value
            from_file.add(name)
    os.environ[FROM_FILE] = ",".join(sorted(from_file & set(values)))


# On a reload, the environment the workers were started with: on_reload goes back to it if the file went bad.
_SERVED_ENVIRONMENT = dict(os.environ)
_load_env_file(os.environ.get("TWILIO_ENV_FILE") or Path.cwd() / "twilio.env")
# Read in the master before any app is loaded, and cleared once it has started: twilio_voice_server
# refuses to be imported in this process before then (`--preload`: see there).
os.environ["TWILIO_BRIDGE_GUNICORN_LOADING"] = str(os.getpid())

METRICS_DIR_PREFIX = "twilio-bridge-metrics-"
# Named before any worker imports prometheus_client, which reads it once; kept across reloads.
# Created in on_starting, so reading this file (gunicorn --check-config, tests) leaves nothing behind.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tempfile.gettempdir(), f"{METRICS_DIR_PREFIX}{os.getpid()}")


def _finite(raw):
    """A number of seconds above 0, else None (nan and inf too)."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _whole(raw):
    """A whole number, at least 1, else None."""
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 1 else None


def _served(name, default, parse):
    """The setting `name` as `parse` reads it (empty is unset: `default`). A bad one is, at start, `default` here
    (on_starting reports it and stops); on a reload, the value already served (on_reload refuses the settings,
    and the workers it retires must keep what they were promised: a held turn's time, their counts)."""
    raw = os.environ.get(name) or ""
    if not raw:
        return default
    return parse(raw) or parse(_SERVED_ENVIRONMENT.get(name) or "") or default


def _bind():
    """HOST and PORT as config.py reads them, an IPv6 address in brackets (gunicorn would take `::1:5001`
    apart wrongly). A bad one is, at start, its default here (on_starting reports it with the line naming it);
    on a reload, the address already served (on_reload refuses the settings), as gunicorn moves to a new one."""
    names = ("HOST", "PORT")
    settings, problems = read_settings({name: os.environ.get(name, "") for name in names})
    if any(problem.startswith(names) for problem in problems):
        settings, _problems = read_settings({name: _SERVED_ENVIRONMENT.get(name, "") for name in names})
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.port}"


bind = _bind()
CORES = len(os.sched_getaffinity(0))  # the cores this process may run on (a cpuset, not a --cpus quota)
workers = _served("GUNICORN_WORKERS", CORES + 1, _whole)  # see above: one more than the cores
worker_class = "twilio_bridge.web.worker.ThreadWorker"  # gthread, a kept connection served by its thread
threads = _served("GUNICORN_THREADS", 250, _whole)  # calls in flight per worker; see above
backlog = 2048
timeout = 30  # heartbeat: a worker silent this long is stuck; every webhook answers within 13 s
graceful_timeout = int(_served("RASA_MAX_WAIT_SECONDS", 30, _finite)) + 5  # held turns finish on reload or stop
keepalive = 5
EXIT_MARGIN = 1.0  # seconds of graceful_timeout kept for the worker's own exit after worker_exit
accesslog = None  # the app logs one structured line per webhook
errorlog = "-"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(raw):
    """LOG_LEVEL as config.py reads it (spaces around it do not count), else None."""
    level = raw.strip().lower()
    return level if level in LOG_LEVELS else None


loglevel = _served("LOG_LEVEL", "info", _log_level)  # a bad one: INFO at start, so that on_starting can report it
logconfig_dict = gunicorn_logconfig(loglevel.upper())
logger_class = "twilio_bridge.logs.GunicornLogger"  # builds no access line, which the logconfig drops


def on_starting(server):
    """Check the settings and the state store once in the master (a bad one stops gunicorn with one line
    naming it), say what it will serve (the start-up banner, once, not per worker); start the metrics from zero."""
    metrics_ready = _prepare_metrics_dir()  # before the app's modules are imported: they make their metrics
    os.environ.pop("TWILIO_BRIDGE_GUNICORN_LOADING", None)
    from twilio_bridge.logs import configure_logging
    from twilio_bridge.startup import announce, configure, env_file, local_origin

    try:
        bad = _report_bad_counts() or not metrics_ready
        settings = configure().settings_or_exit()  # its own lines too, with the ones above: one pass fixes all
        if bad:
            raise SystemExit(2)
        from twilio_voice_server import refuse_unusable_setup  # the app's modules: they need the metrics directory

        refuse_unusable_setup(settings)
    except SystemExit:
        on_exit(server)
        raise
    configure_logging(settings.log_level)
    address = server.cfg.address[0]  # the command line's -b, else `bind` above: (host, port), or a socket's path
    if isinstance(address, tuple):
        origin = local_origin(*address)
    else:  # -b unix:PATH, written as nginx's proxy_pass writes it
        origin = f"http://unix:{address}:" if isinstance(address, str) else server.cfg.bind[0]
    announce(settings, env_file(os.environ, Path.cwd()), origin)


def _prepare_metrics_dir():
    """PROMETHEUS_MULTIPROC_DIR made, and emptied of an earlier run's samples; else the line naming it, and False."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for stale in glob(os.path.join(directory, "*.db")):
            os.remove(stale)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        print(f"twilio-bridge: configuration error: PROMETHEUS_MULTIPROC_DIR={directory}: cannot be made or written "
              f"to ({exc.strerror})", file=sys.stderr)
        return False
    return True


def _report_bad_counts():
    """One line per bad GUNICORN_WORKERS or GUNICORN_THREADS; whether there was any."""
    bad = False
    for name in ("GUNICORN_WORKERS", "GUNICORN_THREADS"):
        raw = os.environ.get(name) or ""
        if raw and not _whole(raw):
            print(f"twilio-bridge: configuration error: {name}={raw}: a whole number, 1 or more", file=sys.stderr)
            bad = True
    return bad


def on_reload(server):
    """A reload (HUP) whose twilio.env has bad settings names each, and the new workers start with the settings
    the old ones had: else gunicorn would retire every worker for new ones that exit at once, again and again."""
    from twilio_bridge.startup import configure

    bad_counts = _report_bad_counts()
    problems = configure().problems
    if not problems and not bad_counts:
        return
    for problem in problems:
        print(f"twilio-bridge: configuration error: {problem}", file=sys.stderr)
    print("twilio-bridge: reload refused: the workers keep the settings they had; fix the lines above and reload "
          "again", file=sys.stderr)
    new_names = set(os.environ.get(FROM_FILE, "").split(",")) - set(_SERVED_ENVIRONMENT) - {""}
    os.environ.clear()
    os.environ.update(_SERVED_ENVIRONMENT)
    # The app reads twilio.env too, under what is set: a name the file has just gained stays empty (unset),
    # and counts as the file's, so that the next reload reads it from the file again.
    os.environ.update(dict.fromkeys(new_names, ""))
    os.environ[FROM_FILE] = ",".join(sorted(set(filter(None, os.environ.get(FROM_FILE, "").split(","))) | new_names))


def post_worker_init(worker):
    """Note when this worker is told to stop (SIGTERM: a stop or a reload), for worker_exit."""
    told_to_stop = worker.handle_exit

    def handle_exit(sig, frame):
        worker.stop_began = time.monotonic()
        told_to_stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: in-flight requests are not interrupted


def worker_exit(server, worker):
    """A worker stopping (reload, SIGTERM) lets its WhatsApp deliveries in hand finish; queued ones stay queued.
    All it stops shares one deadline: what is left of graceful_timeout since SIGTERM (the requests in flight
    had their part), less a margin for the process's exit, so the master never has to SIGKILL the worker."""
    import twilio_voice_server
    from twilio_bridge.app import close_app

    application = vars(twilio_voice_server).get("app")
    if application is not None:
        stopping_for = time.monotonic() - getattr(worker, "stop_began", time.monotonic())
        close_app(application, timeout=max(0.0, graceful_timeout - stopping_for - EXIT_MARGIN))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if metrics_dir.parent == Path(tempfile.gettempdir()) and metrics_dir.name.startswith(METRICS_DIR_PREFIX):
        shutil.rmtree(metrics_dir, ignore_errors=True)
