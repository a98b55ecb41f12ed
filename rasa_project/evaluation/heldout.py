"""How well the assistant understands people it was not trained on: held-out phrasings sent to a running
Rasa's /model/parse (`rasa run --enable-api`), scored as the assistant answers them, fallback included.

    python evaluation/heldout.py [--rasa http://localhost:5005] [evaluation/heldout.yml evaluation/blind.yml]

A phrase is right when Rasa's intent is its label (`nlu_fallback` for what it should not understand);
a fallback on a phrase it should understand is a miss, but a safe one: the user is asked again. A wrong
intent is the miss that matters: the assistant acts on something the user did not say.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Tuple

import requests
import yaml

FALLBACK = "nlu_fallback"
SETS = [Path(__file__).parent / "heldout.yml", Path(__file__).parent / "blind.yml"]


def examples(path: Path) -> List[Tuple[str, str]]:
    """(text, intent) for every example of a Rasa NLU YAML file."""
    found = []
    for block in yaml.safe_load(path.read_text(encoding="utf-8"))["nlu"]:
        if "intent" not in block:
            continue
        for line in block["examples"].splitlines():
            if line.strip().startswith("- "):
                found.append((line.strip()[2:], block["intent"]))
    return found


@dataclass
class Score:
    total: int = 0
    right: int = 0
    fallback: int = 0
    wrong: int = 0
    misses: List[str] = field(default_factory=list)

    def share(self, count: int) -> float:
        return count / self.total if self.total else 0.0

    def summary(self) -> str:
        return (f"{self.total} phrases: {self.share(self.right):.1%} right, {self.share(self.fallback):.1%} "
                f"fallback instead, {self.share(self.wrong):.1%} wrong intent")


def score(phrases: List[Tuple[str, str]], intent_of: Callable[[str], str]) -> Score:
    result = Score(total=len(phrases))
    for text, expected in phrases:
        got = intent_of(text)
        if got == expected:
            result.right += 1
        elif got == FALLBACK:
            result.fallback += 1
            result.misses.append(f"fallback    {expected:18} {text!r}")
        else:
            result.wrong += 1
            result.misses.append(f"WRONG {got:18} for {expected:18} {text!r}")
    return result


def rasa_parser(rasa_url: str) -> Callable[[str], str]:
    session = requests.Session()

    def intent_of(text: str) -> str:
        answer = session.post(f"{rasa_url}/model/parse", json={"text": text}, timeout=10)
        answer.raise_for_status()
        return answer.json()["intent"]["name"]

    return intent_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rasa", default="http://localhost:5005", help="a Rasa started with --enable-api")
    parser.add_argument("sets", nargs="*", type=Path, default=SETS)
    arguments = parser.parse_args()
    intent_of = rasa_parser(arguments.rasa.rstrip("/"))
    for path in arguments.sets:
        result = score(examples(path), intent_of)
        print(f"{path.name}: {result.summary()}")
        for miss in result.misses:
            print(f"  {miss}")


if __name__ == "__main__":
    main()
