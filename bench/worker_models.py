"""gthread or gevent? The capacity run for both, alternating, several rounds; prints each round and the medians.

    BENCH_EXTRA_PATH=/path/with/gevent .venv/bin/python bench/worker_models.py [--rounds 3] [--seconds 10]

gevent is not a dependency of the bridge: install it somewhere for this comparison only
(`pip install --target /tmp/gevent gevent`) and point BENCH_EXTRA_PATH at it. Rounds alternate so
that both models share whatever else the machine is doing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capacity import HEADER, measure, pin  # noqa: E402

MODELS = {
    "gthread (shipped: twilio_bridge.web.worker)": [],
    "gevent": ["-k", "gevent", "--worker-connections", "1000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--bridge-cpu", type=int,
                        help="pin gunicorn to this CPU, the stand-in and callers to the others")
    args = parser.parse_args()
    cpus = pin(args.bridge_cpu)
    results: dict[str, list] = {name: [] for name in MODELS}
    for round_ in range(1, args.rounds + 1):
        for name, gunicorn_args in MODELS.items():
            idle, rows = measure(args.calls, args.seconds, gunicorn_args, cpus, show=False)
            results[name].append((idle, rows))
            print(f"round {round_} {name}: " + "; ".join(
                f"{r.calls} calls {r.turns_per_second:.0f}/s p99 {r.p99:.2f}s err {sum(r.errors.values())} "
                f"holds {r.holds} cpu {r.cpu_ms_per_turn:.2f}ms" for r in rows), flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.seconds:g} s each (errors and holds: all rounds)")
    for name, runs in results.items():
        idle = [statistics.median(mb) for mb in zip(*(i for i, _ in runs))]
        print(f"{name}: RSS idle (MB) {' / '.join(f'{mb:.0f}' for mb in idle)}")
        print(HEADER)
        for index, calls in enumerate(args.calls):
            rows = [rows[index] for _, rows in runs]
            def mid(attr: str) -> float:
                return statistics.median(getattr(r, attr) for r in rows)
            errors = sum(sum(r.errors.values()) for r in rows)
            peak = [statistics.median(mb) for mb in zip(*(r.rss_peak_mb for r in rows))]
            others = [statistics.median(ms) for ms in zip(*(r.others_ms_per_turn for r in rows))]
            print(f"{calls:>6}{mid('turns_per_second'):>9.1f}{mid('steady_per_second'):>8.1f}{calls:>9}"
                  f"{mid('median'):>10.3f}{mid('p99'):>8.3f}{errors:>8}{sum(r.holds for r in rows):>7}"
                  f"{mid('cpu_ms_per_turn'):>13.2f}{'{:.2f}, {:.2f}'.format(*others):>19}"
                  f"{' / '.join(f'{mb:.0f}' for mb in peak):>14}")


if __name__ == "__main__":
    main()
