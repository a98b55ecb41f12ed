"""Capacity: concurrent calls with the Rasa stand-in answering in 1 s, through the shipped gunicorn config.

    .venv/bin/python bench/capacity.py [--calls 50 200 500] [--seconds 20] [-- extra gunicorn arguments]

Each call takes turns back to back (no caller pauses: every call always has a webhook in flight),
following holding <Redirect>s as Twilio does. Little's law sets the ceiling: turns per second can
reach calls ÷ 1 s. By default every call starts at once (the figures' method since the first); `--ramp 1`
spreads the starts over Rasa's 1 s, as calls arrive, so the turns do not come in waves. Prints turns/s, median and p99 time per turn (the caller's words to the answer),
errors, holds, worker CPU per turn, and each worker's RSS idle and at the peak of the load.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Bridge, Tally, bridge, median, percentile, run_calls, standin  # noqa: E402

RASA_SECONDS = 1.0  # the stand-in's answer time (measure's standin(delay=...))
HEADER = (f"{'calls':>6}{'turns/s':>9}{'steady':>8}{'ceiling':>9}{'median s':>10}{'p99 s':>8}{'errors':>8}{'holds':>7}"
          f"{'CPU ms/turn':>13}{'stand-in, callers':>19}{'RSS peak MB':>14}")


@dataclass
class Row:
    calls: int
    turns_per_second: float
    steady_per_second: float  # from the last call's start plus one turn until the stop
    median: float
    p99: float
    errors: dict[str, int]
    holds: int
    cpu_ms_per_turn: float
    others_ms_per_turn: tuple[float, float]  # the stand-in's CPU, the simulated callers' (this process)
    rss_peak_mb: list[float]

    def __str__(self) -> str:
        errors = sum(self.errors.values())
        return (f"{self.calls:>6}{self.turns_per_second:>9.1f}{self.steady_per_second:>8.1f}{self.calls / RASA_SECONDS:>9.0f}{self.median:>10.3f}"
                f"{self.p99:>8.3f}{errors:>8}{self.holds:>7}{self.cpu_ms_per_turn:>13.2f}"
                f"{'{:.2f}, {:.2f}'.format(*self.others_ms_per_turn):>19}"
                f"{' / '.join(f'{mb:.0f}' for mb in self.rss_peak_mb):>14}" + (f"  {self.errors}" if errors else ""))


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def load(running: Bridge, calls: int, seconds: float, idle: list[float], ramp: float = 0.0) -> Row:
    pids, others = running.worker_pids(), [standin_pid(), os.getpid()]
    peak = list(idle)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[:] = [max(a, b) for a, b in zip(peak, running.worker_rss_mb())]

    sampler = threading.Thread(target=sample)
    sampler.start()
    tally = Tally()
    cpu_before, others_before = cpu_seconds(pids), [cpu_seconds([pid]) for pid in others]
    began = time.monotonic()
    try:
        elapsed = asyncio.run(run_calls(running.url, calls, seconds, tally, ramp))
    finally:
        done.set()
        sampler.join()
    turns = max(len(tally.seconds), 1)
    others_ms = tuple(1000 * (cpu_seconds([pid]) - before) / turns for pid, before in zip(others, others_before))
    steady = tally.per_second_between(began + ramp + RASA_SECONDS, began + seconds)
    return Row(calls, len(tally.seconds) / elapsed, steady, median(tally.seconds), percentile(tally.seconds, 0.99),
               tally.errors, tally.holds, 1000 * (cpu_seconds(pids) - cpu_before) / turns, others_ms, peak)  # type: ignore[arg-type]


def standin_pid() -> int:
    """The stand-in this process started (bench.common.standin)."""
    for child in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split():
        if b"twilio_bridge.testing.standin" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise LookupError("no stand-in among this process's children")


def pin(bridge_cpu: int | None) -> set[int] | None:
    """The bridge on one CPU, this process and the stand-in (which inherits it) on the others."""
    if bridge_cpu is None:
        return None
    os.sched_setaffinity(0, os.sched_getaffinity(0) - {bridge_cpu})
    return {bridge_cpu}


def measure(calls: list[int], seconds: float, gunicorn_args: list[str], bridge_cpus: set[int] | None,
            show: bool = True, ramp: float = 0.0) -> tuple[list[float], list[Row]]:
    with standin(delay=RASA_SECONDS) as rasa_url, bridge(rasa_url, *gunicorn_args, cpus=bridge_cpus) as running:
        asyncio.run(run_calls(running.url, 10, 3.0, Tally()))  # warm up: imports, connections, SQLite
        idle = running.worker_rss_mb()
        if show:
            print(f"workers {len(idle)}; RSS idle (MB): {', '.join(f'{mb:.1f}' for mb in idle)}")
            print(HEADER)
        rows = []
        for count in calls:
            rows.append(load(running, count, seconds, idle, ramp))
            if show:
                print(rows[-1], flush=True)
        return idle, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=0.0, metavar="SECONDS",
                        help="start the calls spread over this long, not all at once (bench.common.run_calls)")
    parser.add_argument("--bridge-cpu", type=int,
                        help="pin gunicorn to this CPU, the stand-in and callers to the others")
    parser.add_argument("gunicorn_args", nargs="*", help="after --, e.g. -k gevent --worker-connections 1000")
    args = parser.parse_args()
    measure(args.calls, args.seconds, args.gunicorn_args, pin(args.bridge_cpu), ramp=args.ramp)


if __name__ == "__main__":
    main()
