"""Text cleaning grows linearly with the text, whatever its shape: the work at n and at 4n characters.

    .venv/bin/python bench/text_cleaning.py [--n 25000]

For each hostile shape (runs of markdown marks, unclosed brackets, tags, headings, spaces) and each
cleaning function, the best of three timings at n and 4n characters, and their ratio: about 4 when
the work is linear, 16 when it is quadratic. Exits 1 if any ratio passes 8, naming the pair.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twilio_bridge.limits import MESSAGE_CHARACTERS, SAY_CHARACTERS  # noqa: E402
from twilio_bridge.text import LONGEST_TEXT, fold, for_speech, for_whatsapp, from_user, mask_digits, split_message, split_text  # noqa: E402

LINEAR_AT_MOST = 8.0  # 4 is linear; a little noise on a shared machine, never 16

SHAPES: dict[str, Callable[[int], str]] = {
    "plain sentences": lambda n: ("Su tarjeta queda bloqueada. " * n)[:n],
    "'*' run": lambda n: "*" * n,
    "'*a ' words": lambda n: ("*a " * n)[:n],
    "'**a ' words": lambda n: ("**a " * n)[:n],
    "'_a' run": lambda n: ("_a" * n)[:n],
    "'[' run": lambda n: "[" * n,
    "nested brackets": lambda n: ("[" * (n // 2) + "]" * (n // 2)),
    "'[a](' links unclosed": lambda n: ("[a](" * n)[:n],
    "'~~' run": lambda n: "~~" * (n // 2),
    "'~~a ' words": lambda n: ("~~a " * n)[:n],
    "'<' run": lambda n: "<" * n,
    "'<a' tags unclosed": lambda n: ("<a" * n)[:n],
    "'&a' entities unclosed": lambda n: ("&a" * n)[:n],
    "'<br' breaks unclosed": lambda n: ("<br" * n)[:n],
    "'`a ' words": lambda n: ("`a " * n)[:n],
    "heading then spaces": lambda n: "# a" + " " * (n - 4) + "b",
    "newlines": lambda n: "\n" * n,
    "'# ' lines": lambda n: ("# a\n" * n)[:n],
    "digits and spaces": lambda n: ("1 " * n)[:n] + "x",
}

CLEANERS: dict[str, Callable[[str], object]] = {
    "for_speech + split": lambda text: split_text(for_speech(text), SAY_CHARACTERS),
    "for_whatsapp + split": lambda text: split_message(for_whatsapp(text), MESSAGE_CHARACTERS),
    "from_user + fold": lambda text: fold(from_user(text)),
    "mask_digits": mask_digits,
}


def best_of_three(clean: Callable[[str], object], text: str) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        clean(text)
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=LONGEST_TEXT // 4, help="the smaller size, in characters")
    n = parser.parse_args().n
    print(f"{'shape':<24} {'cleaner':<22} {f'{n} chars':>12} {f'{4 * n} chars':>12} {'ratio':>6}")
    worst: list[str] = []
    for shape, make in SHAPES.items():
        small, large = make(n), make(4 * n)
        for name, clean in CLEANERS.items():
            at_n, at_4n = best_of_three(clean, small), best_of_three(clean, large)
            ratio = at_4n / max(at_n, 1e-6)
            print(f"{shape:<24} {name:<22} {at_n * 1000:>10.2f}ms {at_4n * 1000:>10.2f}ms {ratio:>6.1f}")
            if ratio > LINEAR_AT_MOST and at_4n > 0.005:  # below 5 ms the ratio is noise
                worst.append(f"{shape} / {name}: x{ratio:.1f}")
    if worst:
        print("not linear:", "; ".join(worst))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
