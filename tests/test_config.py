from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twilio_bridge.config import ConfigError, Settings, load_settings, redact_url
from twilio_bridge.startup import EnvFile, banner

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_follow_the_design() -> None:
    settings = load_settings({"TWILIO_AUTH_TOKEN": "t"})
    assert (settings.host, settings.port, settings.rasa_timeout) == ("127.0.0.1", 5001, 8)
    assert settings.rasa_webhook_url == "http://localhost:5005/webhooks/rest/webhook"
    assert (settings.voice_language, settings.voice_name) == ("es-MX", "Polly.Mia")
    assert settings.validate_signature and settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.rasa_origin == "http://localhost:5005"


def test_every_bad_variable_gets_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({
            "HOST": "http://0.0.0.0:5001", "PORT": "http", "RASA_TIMEOUT": "20", "RASA_WEBHOOK_URL": "localhost:5005",
            "FALLBACK_PHONE_NUMBER": "5512345678", "PUBLIC_BASE_URL": "https://ivr.example.com/webhook",
            "STATE_URL": "postgres://x", "TWILIO_VALIDATE_SIGNATURE": "maybe", "TWILIO_WHATSAPP_FROM": "+14155238886",
        })
    names = [line.split("=")[0].split(":")[0] for line in caught.value.problems]
    assert names == ["HOST", "PORT", "RASA_WEBHOOK_URL", "RASA_TIMEOUT", "TWILIO_VALIDATE_SIGNATURE", "PUBLIC_BASE_URL",
                     "FALLBACK_PHONE_NUMBER", "TWILIO_WHATSAPP_FROM", "STATE_URL", "TWILIO_AUTH_TOKEN"]


@pytest.mark.parametrize("name, value", [
    ("TWILIO_SMS_FROM", "+5٢١٥٥١٢٣٤٥٦٧٨"), ("FALLBACK_PHONE_NUMBER", "+5２１５５１２３４５６７８"),
    ("TWILIO_WHATSAPP_FROM", "whatsapp:+1٤155238886"),
])
def test_a_number_with_digits_other_than_0_to_9_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", name: value})
    assert [line.split("=")[0] for line in caught.value.problems] == [name]


def test_no_token_means_no_start_unless_validation_is_explicitly_off() -> None:
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        load_settings({})
    assert load_settings({"TWILIO_VALIDATE_SIGNATURE": "false"}).validate_signature is False


def test_shared_keys_and_the_summary_keep_secrets_out() -> None:
    settings = load_settings({"TWILIO_AUTH_TOKEN": "s3cret-token", "TWILIO_WEBHOOK_SHARED_KEYS": "k1:abc, k2:def"})
    assert dict(settings.shared_keys) == {"k1": "abc", "k2": "def"}
    summary = repr(settings.summary()) + repr(settings)
    assert "s3cret-token" not in summary and "abc" not in summary and "k1" in summary


def test_the_server_refuses_to_start_with_one_line_per_problem(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "twilio_voice_server.py")], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "RASA_TIMEOUT": "abc"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "twilio-bridge: configuration error: RASA_TIMEOUT='abc': is not a number",
        "twilio-bridge: configuration error: TWILIO_AUTH_TOKEN: required to check Twilio's signatures "
        "(set TWILIO_VALIDATE_SIGNATURE=false only for local experiments)",
        f"twilio-bridge: no twilio.env in {tmp_path}: settings come from the environment only "
        "(./install_twilio_server.sh creates twilio.env from twilio.env.example)",
    ]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://bridge:s3/cr@t@cache/1", "rediss://bridge:***@cache/1"),
    ("redis:/:s3cret@cache", "redis:/:***@cache"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("redis://bridge@cache/0", "redis://bridge@cache/0"),
    ("sqlite:///state/bridge.db", "sqlite:///state/bridge.db"),
])
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_malformed_state_url_is_echoed_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "STATE_URL": "redis:/:s3cret@cache:6379/0"})
    assert caught.value.problems[0].startswith("STATE_URL='redis:/:***@cache:6379/0': must be")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "10.0.0.11", "::1", "localhost", "bridge-1.internal"])
def test_host_is_an_address_to_listen_on(host: str) -> None:
    assert load_settings({"TWILIO_AUTH_TOKEN": "t", "HOST": host}).host == host


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_every_variable_is_documented_for_operators() -> None:
    from twilio_bridge.config import VARIABLES

    example = (ROOT / "twilio.env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name, _, _ in VARIABLES:
        assert f"\n{name}=" in example, f"{name} is missing from twilio.env.example"
        assert f"`{name}`" in readme, f"{name} is missing from the README's settings table"


def test_the_outbound_api_token_is_long_never_echoed_and_needs_what_it_sends_with() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "OUTBOUND_API_TOKEN": "short-secret", "TWILIO_VOICE_FROM": "+14155550199"})
    assert caught.value.problems[0].startswith("OUTBOUND_API_TOKEN: must be at least 16 characters")
    assert "short-secret" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "OUTBOUND_API_TOKEN": "x" * 16, "TWILIO_VOICE_FROM": "+14155550199"})
    assert [line.split(":")[0] for line in caught.value.problems] == ["TWILIO_ACCOUNT_SID", "PUBLIC_BASE_URL"]
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_VALIDATE_SIGNATURE": "false", "OUTBOUND_API_TOKEN": "x" * 16, "TWILIO_ACCOUNT_SID": "AC1"})
    assert caught.value.problems[0].startswith("TWILIO_AUTH_TOKEN: required with OUTBOUND_API_TOKEN")
    settings = load_settings({"TWILIO_AUTH_TOKEN": "t", "OUTBOUND_API_TOKEN": "x" * 16, "TWILIO_ACCOUNT_SID": "AC1"})
    assert settings.outbound_enabled and settings.delivers_through_rest and not settings.whatsapp_rest_mode
    assert "x" * 16 not in repr(settings) + repr(settings.summary())


@pytest.mark.parametrize("name, value, detail", [
    ("RASA_WEBHOOK_URL", "http://localhost:99999/webhooks/rest", "must be an http(s) URL"),
    ("RASA_WEBHOOK_URL", "http://:5005/webhooks/rest", "must be an http(s) URL"),
    ("RASA_WEBHOOK_URL", "http://rasa host:5005/webhooks/rest", "must be an http(s) URL"),
    ("RASA_WEBHOOK_URL", "http://rasa..internal:5005/webhooks/rest", "must be an http(s) URL"),
    ("ACTION_SERVER_URL", "http://localhost:web/webhook", "must be an http(s) URL"),
    ("TWILIO_API_BASE_URL", "http://[::1:5099", "must be an http(s) origin such as https://api.twilio.com (no path)"),
    ("TWILIO_API_BASE_URL", "https://api.twilio.com/2010-04-01",
     "must be an http(s) origin such as https://api.twilio.com (no path)"),
    ("PUBLIC_BASE_URL", "https://ivr.example.com:https", "must be an origin such as https://ivr.example.com (no path)"),
    ("PUBLIC_BASE_URL", "https://:443", "must be an origin such as https://ivr.example.com (no path)"),
])
def test_a_url_whose_host_or_port_cannot_be_used_is_refused_at_start(name: str, value: str, detail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", name: value})
    assert caught.value.problems == [f"{name}={value!r}: {detail}"]


def test_a_public_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "PUBLIC_BASE_URL": "https://ops:s3cret@ivr.example.com"})
    assert caught.value.problems == ["PUBLIC_BASE_URL='https://ops:***@ivr.example.com': must be an origin such as "
                                     "https://ivr.example.com (no user or password: it is shown in logs and /health)"]


def test_a_name_set_twice_in_twilio_env_is_pointed_out_with_the_lines(tmp_path: Path) -> None:
    """Settings pasted above the example's empty lines: the empty one, further down, is the one that counts."""
    (tmp_path / "twilio.env").write_text("TWILIO_AUTH_TOKEN=s3cret\nPUBLIC_BASE_URL=https://ivr.example.com\n\n"
                                         "# from twilio.env.example\nTWILIO_AUTH_TOKEN=\nPUBLIC_BASE_URL=\n")
    result = subprocess.run([sys.executable, str(ROOT / "twilio_voice_server.py")], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "twilio-bridge: configuration error: TWILIO_AUTH_TOKEN: required to check Twilio's signatures "
        "(set TWILIO_VALIDATE_SIGNATURE=false only for local experiments)",
        f"twilio-bridge: {tmp_path / 'twilio.env'}: TWILIO_AUTH_TOKEN is set on lines 1 and 5: the last one counts",
        f"twilio-bridge: {tmp_path / 'twilio.env'}: PUBLIC_BASE_URL is set on lines 2 and 6: the last one counts",
    ]
    assert "s3cret" not in result.stderr


def test_voice_language_is_read_in_the_case_twilio_and_the_relay_voices_use() -> None:
    settings = load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_LANGUAGE": "es-mx"})
    assert settings.voice_language == "es-MX"
    assert settings.relay_voice_name == "Mia-Neural"  # not Twilio's default voice, which is not Spanish's
    assert load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_LANGUAGE": "CMN-hans-cn"}).voice_language == "cmn-Hans-CN"


@pytest.mark.parametrize("value", ["es_MX", "es MX", "spanish", "es-"])
def test_a_voice_language_that_is_not_a_language_tag_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TWILIO_AUTH_TOKEN": "t", "VOICE_LANGUAGE": value})
    assert caught.value.problems == [f"VOICE_LANGUAGE={value!r}: must be a language tag such as es-MX or en-US"]


def test_a_password_in_rasas_urls_stays_out_of_the_summary_and_the_start_up_lines() -> None:
    """/health's detail, the banner (journald) and check show the URLs; Rasa behind a proxy may need basic auth."""
    settings = load_settings({"TWILIO_AUTH_TOKEN": "t",
                              "RASA_WEBHOOK_URL": "http://bridge:s3cret@127.0.0.1:9/webhooks/rest/webhook",
                              "ACTION_SERVER_URL": "http://bridge:s3cret@127.0.0.1:9/webhook"})
    assert settings.rasa_webhook_url == "http://bridge:s3cret@127.0.0.1:9/webhooks/rest/webhook"  # used as given
    summary = settings.summary()
    assert summary["rasa_webhook_url"] == "http://bridge:***@127.0.0.1:9/webhooks/rest/webhook"
    assert "s3cret" not in repr(summary)
    lines, warnings = banner(settings, EnvFile(Path("/nonexistent/twilio.env"), named=False), "http://127.0.0.1:5001")
    assert "s3cret" not in repr(lines) + repr(warnings)
    assert "http://bridge:***@127.0.0.1:9/webhooks/rest/webhook" in dict(lines)["rasa"]
