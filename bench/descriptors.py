"""File descriptors per worker under concurrent calls, through the shipped gunicorn config (250 threads a worker).

    .venv/bin/python bench/descriptors.py [--calls 500] [--seconds 15]

The Rasa stand-in answers in 1 s; every call takes turns back to back, so `--calls` webhooks are in
flight at once. Samples each worker's /proc/PID/fd twice a second and prints, per worker, the peak of
all its descriptors, of those on the SQLite state file (database, WAL, shared memory, lock), and of
sockets, beside the worker's soft RLIMIT_NOFILE.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Tally, bridge, run_calls, standin  # noqa: E402


def descriptors(pid: int) -> Counter[str]:
    """A worker's open descriptors by kind: `sqlite` (the state file and its companions), `socket`, `other`."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
        kinds["sqlite" if "/state.db" in target else "socket" if target.startswith("socket:") else "other"] += 1
    kinds["total"] = sum(kinds.values())
    return kinds


def soft_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with standin(delay=1.0) as rasa_url, bridge(rasa_url) as running:
        pids = running.worker_pids()
        peaks = {pid: descriptors(pid) for pid in pids}
        idle = {pid: peaks[pid]["total"] for pid in pids}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                for pid in pids:
                    peaks[pid] |= descriptors(pid)  # the peak of each kind

        sampler = threading.Thread(target=sample)
        sampler.start()
        tally = Tally()
        try:
            asyncio.run(run_calls(running.url, args.calls, args.seconds, tally))
        finally:
            done.set()
            sampler.join()
        print(f"{args.calls} concurrent calls for {args.seconds:g} s: {len(tally.seconds)} turns, "
              f"errors {dict(tally.errors) or 0}")
        print(f"{'worker':>8}{'idle':>6}{'peak':>6}{'sqlite':>8}{'sockets':>9}{'other':>7}{'soft limit':>12}")
        for pid in pids:
            peak = peaks[pid]
            print(f"{pid:>8}{idle[pid]:>6}{peak['total']:>6}{peak['sqlite']:>8}{peak['socket']:>9}{peak['other']:>7}"
                  f"{soft_limit(pid):>12}")


if __name__ == "__main__":
    main()
