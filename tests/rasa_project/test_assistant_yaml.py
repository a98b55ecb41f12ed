"""The assistant's YAML agrees with itself: what rules, stories, forms and actions name, the domain defines."""

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import yaml
from rasa_sdk.executor import ActionExecutor

from twilio_bridge.limits import GATHER_INPUTS
from twilio_bridge.rasa.turn import GATHER_OPTIONS, read_turn

RASA_DEFAULT_INTENTS = {"session_start", "session_end", "restart", "back", "out_of_scope", "nlu_fallback"}
RASA_DEFAULT_ACTIONS = {
    "action_listen", "action_restart", "action_session_start", "action_default_fallback",
    "action_deactivate_loop", "action_revert_fallback_events", "action_default_ask_affirmation",
    "action_default_ask_rephrase", "action_two_stage_fallback", "action_unlikely_intent",
    "action_back", "action_extract_slots",
}
# Intents only the bridge sends, as /commands: declared for Rasa 3.6, never said by a person.
BRIDGE_COMMANDS = {"session_end"}
RASA_DEFAULT_SLOTS = {"requested_slot", "session_started_metadata"}
NEEDS_TENSORFLOW = {"DIETClassifier", "TEDPolicy", "ResponseSelector", "ConveRTFeaturizer",
                    "UnexpecTEDIntentPolicy", "LanguageModelFeaturizer"}
DIRECTIVE_KEYS = {"hangup", "handoff", "gather"}
# Variables the custom actions pass to `utter_message(response=..., digits=..., reference=...)`.
ACTION_VARIABLES = {"digits", "reference"}
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")
MARKDOWN = re.compile(r"[*_`#\[\]<>|~]|\d\.\s|^\s*-\s")


def load(project_dir: Path, name: str) -> Dict[str, Any]:
    return yaml.safe_load((project_dir / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def steps(project_dir: Path) -> List[Dict[str, Any]]:
    training = [load(project_dir, f"data/{path.name}") for path in sorted((project_dir / "data").glob("*.yml"))]
    rules = [rule for data in training for rule in data.get("rules", [])]
    stories = [story for data in training for story in data.get("stories", [])]
    found = [step for item in rules + stories for step in item.get("condition", []) + item["steps"]]
    assert found, "no rule or story steps were read"
    return found


def domain_actions(domain: Dict[str, Any]) -> Set[str]:
    return set(domain["actions"]) | set(domain["responses"]) | set(domain["forms"]) | RASA_DEFAULT_ACTIONS


def domain_intents(domain: Dict[str, Any]) -> Set[str]:
    return set(domain["intents"]) | RASA_DEFAULT_INTENTS


def texts(domain: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    assert domain["responses"], "the domain has no responses"
    for name, variations in domain["responses"].items():
        for variation in variations:
            yield name, variation.get("text", "")
            for button in variation.get("buttons", []):
                yield name, button["title"]


def test_files_use_rasa_3_formats(project_dir: Path) -> None:
    for name in ("domain.yml", *(f"data/{path.name}" for path in (project_dir / "data").glob("*.yml"))):
        assert load(project_dir, name)["version"] == "3.1", name


def test_config_is_offline_spanish_and_identified(project_dir: Path) -> None:
    config = load(project_dir, "config.yml")
    assert config["language"] == "es"
    assert config["assistant_id"]
    components = {c["name"] for c in config["pipeline"]} | {p["name"] for p in config["policies"]}
    assert "FallbackClassifier" in components and "RulePolicy" in components
    assert not {c for c in components if "LLM" in c or "Command" in c or "Enterprise" in c}
    assert not components & NEEDS_TENSORFLOW, "plain rasa-pro has no TensorFlow: rasa-pro[nlu] would be needed"


def test_steps_name_only_what_the_domain_defines(domain: Dict[str, Any], steps: List[Dict[str, Any]]) -> None:
    slots = set(domain["slots"]) | RASA_DEFAULT_SLOTS
    for step in steps:
        if "intent" in step:
            assert step["intent"] in domain_intents(domain), step
        if "action" in step:
            assert step["action"] in domain_actions(domain), step
        if step.get("active_loop"):
            assert step["active_loop"] in domain["forms"], step
        for slot_event in step.get("slot_was_set", []):
            assert set(slot_event) <= slots, step


def test_forms_and_slot_mappings_name_what_the_domain_defines(domain: Dict[str, Any]) -> None:
    assert domain["forms"] and domain["slots"]
    for form in domain["forms"].values():
        assert set(form["required_slots"]) <= set(domain["slots"])
        for slot in form["required_slots"]:
            assert f"utter_ask_{slot}" in domain["responses"] or f"action_ask_{slot}" in domain["actions"]
    for slot in domain["slots"].values():
        for mapping in slot["mappings"]:
            assert set(mapping.get("intent", []) + mapping.get("not_intent", [])) <= domain_intents(domain)
            for condition in mapping.get("conditions", []):
                assert condition["active_loop"] in domain["forms"]
                if "requested_slot" in condition:
                    assert condition["requested_slot"] in domain["slots"]


def test_every_form_has_its_validation_action(domain: Dict[str, Any]) -> None:
    assert domain["forms"]
    for form in domain["forms"]:
        assert f"validate_{form}" in domain["actions"]


def test_responses_the_actions_send_exist(domain: Dict[str, Any], project_dir: Path) -> None:
    source = "".join(path.read_text() for path in (project_dir / "actions").glob("*.py"))
    named = set(re.findall(r'response="(utter_\w+)"', source))
    assert named, "the actions name no responses: the pattern above is stale"
    assert named <= set(domain["responses"])


def test_custom_actions_in_the_domain_are_implemented(domain: Dict[str, Any]) -> None:
    """The actions rasa-sdk registers from the package, as `python -m rasa_sdk --actions actions` would."""
    executor = ActionExecutor()
    executor.register_package("actions")
    implemented = set(executor.actions)
    assert set(domain["actions"]) == implemented


def test_every_intent_has_several_examples(domain: Dict[str, Any], project_dir: Path) -> None:
    examples = {
        item["intent"]: [line for line in item["examples"].splitlines() if line.strip().startswith("- ")]
        for item in load(project_dir, "data/nlu.yml")["nlu"] if "intent" in item
    }
    # Noise is taught as Rasa's own fallback intent (rasa_project/README.md, "What it understands").
    assert set(examples) == set(domain["intents"]) - BRIDGE_COMMANDS | {"nlu_fallback"}
    for intent, lines in examples.items():
        assert len(lines) >= 6, intent
        assert len(set(lines)) == len(lines), intent


def test_held_out_phrasings_are_never_trained_on(project_dir: Path) -> None:
    def phrases(name: str) -> Set[str]:
        found = {line.strip()[2:].lower() for item in load(project_dir, name).get("nlu", []) if "intent" in item
                 for line in item["examples"].splitlines() if line.strip().startswith("- ")}
        return found

    data = (project_dir / "data").glob("*.yml")
    trained = set().union(*(phrases(str(path.relative_to(project_dir))) for path in data))
    assert trained
    for held_out in ("evaluation/heldout.yml", "evaluation/blind.yml"):
        assert phrases(held_out), held_out
        assert not phrases(held_out) & trained, held_out


def test_every_response_is_used(domain: Dict[str, Any], steps: List[Dict[str, Any]], project_dir: Path) -> None:
    source = "".join(path.read_text() for path in (project_dir / "actions").glob("*.py"))
    used = {step["action"] for step in steps if "action" in step}
    used |= set(re.findall(r'response="(utter_\w+)"', source))
    used |= {f"utter_ask_{slot}" for form in domain["forms"].values() for slot in form["required_slots"]}
    used.add("utter_default")  # Rasa's action_default_fallback says it
    assert set(domain["responses"]) <= used


def test_responses_read_well_aloud(domain: Dict[str, Any]) -> None:
    for name, text in texts(domain):
        assert text.strip(), name
        assert not EMOJI.search(text), name
        assert not MARKDOWN.search(text), name
        assert "\n" not in text.strip(), name
        sentences = [s for s in re.split(r"[.?!]\s*", text) if s.strip()]
        assert all(len(s.split()) <= 14 for s in sentences), (name, text)


def test_numbers_in_responses_come_from_the_actions(domain: Dict[str, Any]) -> None:
    """A literal number would be read as a quantity; digits are formatted by the actions."""
    slots = set(domain["slots"])
    for name, text in texts(domain):
        assert not re.search(r"\d", text), name
        assert set(re.findall(r"{(\w+)}", text)) <= ACTION_VARIABLES | slots, name


def test_custom_payloads_are_voice_directives(domain: Dict[str, Any]) -> None:
    directives = [(name, v) for name, variations in domain["responses"].items()
                  for v in variations if "custom" in v]
    assert {key for _, v in directives for key in v["custom"]} == DIRECTIVE_KEYS
    for name, variation in directives:
        custom = variation["custom"]
        assert set(custom) <= DIRECTIVE_KEYS, name
        if "hangup" in custom:
            assert custom["hangup"] is True, name
        if "handoff" in custom:
            handoff = custom["handoff"]
            assert handoff is True or set(handoff) == {"number"}, name
        if "gather" in custom:
            assert set(custom["gather"]) <= GATHER_OPTIONS, name
            assert custom["gather"]["input"] in GATHER_INPUTS, name
        # Rasa's REST channel sends the text, then the custom payload, as two items.
        turn = read_turn([{"text": variation["text"]}, {"custom": custom}])
        assert turn.texts == (variation["text"],), name
        assert turn.hangup == ("hangup" in custom), name
        assert turn.handoff == ("handoff" in custom), name
        if isinstance(custom.get("handoff"), dict):
            assert turn.handoff_number == custom["handoff"]["number"], name
        # The bridge drops what it would not give Twilio: every option must come through unchanged.
        assert turn.gather == custom.get("gather", {}), name


def test_card_digits_are_asked_for_on_the_keypad(domain: Dict[str, Any]) -> None:
    gather = domain["responses"]["utter_ask_card_last_four"][0]["custom"]["gather"]
    assert gather["num_digits"] == 4 and "dtmf" in gather["input"]


def test_confirmation_offers_yes_and_no_buttons(domain: Dict[str, Any]) -> None:
    confirmation = domain["responses"]["utter_confirm_card"][0]
    buttons = confirmation["buttons"]
    assert [(b["title"], b["payload"]) for b in buttons] == [("Sí", "/affirm"), ("No", "/deny")]
    turn = read_turn([{"text": confirmation["text"], "buttons": buttons}])
    assert [(b.title, b.payload) for b in turn.buttons] == [("Sí", "/affirm"), ("No", "/deny")]


def test_rest_channel_and_action_server_are_configured(project_dir: Path) -> None:
    assert "rest" in load(project_dir, "credentials.yml")
    assert load(project_dir, "endpoints.yml")["action_endpoint"]["url"] == "http://localhost:5055/webhook"
