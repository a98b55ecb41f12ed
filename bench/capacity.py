"""Capacity: concurrent calls with the Rasa stand-in answering in 1 s, through the shipped gunicorn config.

    .venv/bin/python bench/capacity.py [--calls 50 200 500] [--seconds 20] [-- extra gunicorn arguments]

Each call takes turns back to back (no caller pauses: every call always has a webhook in flight),
following holding <Redirect>s as Twilio does. Little's law sets the ceiling: turns per second can
reach calls ÷ 1 s. Prints turns/s, median and p99 time per turn (the caller's words to the answer),
errors, holds, worker CPU per turn, and each worker's RSS idle and at the peak of the load.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Tally, bridge, median, percentile, run_calls, standin  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--bridge-cpu", type=int, help="pin gunicorn to this CPU and the stand-in and callers "
                        "to the others, to compare worker models without their noise")
    parser.add_argument("gunicorn_args", nargs="*", help="after --, e.g. -k gevent --worker-connections 1000")
    args = parser.parse_args()
    bridge_cpus = None
    if args.bridge_cpu is not None:
        bridge_cpus = {args.bridge_cpu}
        os.sched_setaffinity(0, os.sched_getaffinity(0) - bridge_cpus)  # the stand-in inherits it
    with standin(delay=1.0) as rasa_url, bridge(rasa_url, *args.gunicorn_args, cpus=bridge_cpus) as running:
        pids = running.worker_pids()
        asyncio.run(run_calls(running.url, 10, 3.0, Tally()))  # warm up: imports, connections, SQLite
        idle = running.worker_rss_mb()
        print(f"workers {len(pids)}; RSS idle (MB): {', '.join(f'{mb:.1f}' for mb in idle)}")
        print(f"{'calls':>6}{'turns/s':>9}{'ceiling':>9}{'median s':>10}{'p99 s':>8}{'errors':>8}{'holds':>7}"
              f"{'CPU ms/turn':>13}{'RSS peak MB':>14}")
        for calls in args.calls:
            peak = list(idle)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.5):
                    peak[:] = [max(a, b) for a, b in zip(peak, running.worker_rss_mb())]

            sampler = threading.Thread(target=sample)
            sampler.start()
            tally = Tally()
            cpu_before = cpu_seconds(pids)
            elapsed = asyncio.run(run_calls(running.url, calls, args.seconds, tally))
            cpu = cpu_seconds(pids) - cpu_before
            done.set()
            sampler.join()
            turns = len(tally.seconds)
            errors = sum(tally.errors.values())
            detail = f"  {tally.errors}" if errors else ""
            print(f"{calls:>6}{turns / elapsed:>9.1f}{calls / 1.0:>9.0f}{median(tally.seconds):>10.3f}"
                  f"{percentile(tally.seconds, 0.99):>8.3f}{errors:>8}{tally.holds:>7}"
                  f"{1000 * cpu / max(turns, 1):>13.2f}{' / '.join(f'{mb:.0f}' for mb in peak):>14}{detail}",
                  flush=True)


if __name__ == "__main__":
    main()
