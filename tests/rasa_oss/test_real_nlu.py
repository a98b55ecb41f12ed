"""The trained assistant understands people it was not trained on (rasa_project/evaluation/): the held-out
sets through the running Rasa's /model/parse, its fallback included."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from .conftest import Assistant
from .real_rasa import PROJECT


def evaluation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rasa_project_heldout", PROJECT / "evaluation" / "heldout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


HELDOUT = evaluation()


@pytest.mark.parametrize("name, right, wrong", [
    ("heldout.yml", 0.95, 0.02),  # the set the training data was improved against
    ("blind.yml", 0.92, 0.06),    # written afterwards, never tuned against: a floor, not a target
])
def test_held_out_phrasings_are_understood_or_fall_back(assistant: Assistant, name: str, right: float,
                                                         wrong: float) -> None:
    phrases = HELDOUT.examples(PROJECT / "evaluation" / name)
    result = HELDOUT.score(phrases, HELDOUT.rasa_parser(assistant.rasa.url))
    assert result.total >= 80
    assert result.share(result.right) >= right, result.summary() + "\n" + "\n".join(result.misses)
    assert result.share(result.wrong) <= wrong, result.summary() + "\n" + "\n".join(result.misses)
