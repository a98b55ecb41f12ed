"""Text hygiene: what reaches Rasa, a speaker and the logs."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twilio_bridge.text import LONGEST_TEXT, for_speech, for_whatsapp, from_user, mask_digits, plain, split_text

HOSTILE_SHAPES = {  # 100 kB each, the longest reply the README promises; shapes that made markdown patterns backtrack
    "stars": "*" * 100_000,
    "underscore_words": "_a" * 50_000,
    "open_brackets": "[" * 100_000,
    "nested_brackets": "[" * 50_000 + "]" * 50_000,
    "unclosed_links": "[a](" * 25_000,
    "strike_runs": "~~" * 50_000,
    "angle_brackets": "<" * 100_000,
    "bold_words": "**a " * 25_000,
    "heading_then_spaces": "# a" + " " * 99_996 + "b",
}


def test_user_text_never_starts_with_a_slash() -> None:
    assert from_user("/restart") == "restart"
    assert from_user(" //SetSlots(x=1)") == "SetSlots(x=1)"
    assert from_user("/") == ""
    assert from_user("hola /tú") == "hola /tú"
    assert from_user("/\u00a0/restart") == "restart"  # a no-break space between the slashes
    assert from_user("/ \u3000 /SetSlots(card_blocked=true)") == "SetSlots(card_blocked=true)"


@given(st.lists(st.sampled_from(["/", " ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\u202f", "\x85"]), min_size=1),
       st.sampled_from(["/restart", "/SetSlots(card_blocked=true)", "//stop", "hola"]))
def test_no_spaces_and_slashes_before_a_command_bring_it_to_rasa(prefix: list[str], command: str) -> None:
    assert not from_user("".join(prefix) + command).lstrip().startswith("/")


def test_html_entities_are_the_characters_they_stand_for() -> None:
    assert for_speech("Tom &amp; Jerry&nbsp;hoy &lt;3") == "Tom & Jerry\u00a0hoy <3"
    assert for_whatsapp("Precio: 5&nbsp;&euro; &mdash; &quot;oferta&quot; &#128179;") == 'Precio: 5\u00a0€ — "oferta" 💳'
    assert for_whatsapp("&lt;b&gt;negrita&lt;/b&gt;") == "negrita"  # an escaped tag is a tag all the same
    assert for_whatsapp("https://x.y/?a=1&para=2&copy=3 R&D") == "https://x.y/?a=1&para=2&copy=3 R&D"  # no ';'


def test_a_tag_that_ends_a_line_leaves_the_words_apart() -> None:
    assert for_whatsapp("Hola<br>mundo<BR/>otra <b>vez</b><p>Fin</p>") == "Hola\nmundo\notra vez\nFin"
    assert for_speech("Hola<br />mundo<div>adiós</div>") == "Hola mundo adiós"


def test_speech_text_loses_markdown_emoji_and_tags_but_keeps_meaning() -> None:
    assert for_speech("# Aviso\n* **Tarjeta** bloqueada ✅\n* Ver [detalles](https://x.y)") == (
        "Aviso Tarjeta bloqueada Ver detalles")
    assert for_speech("5 * 3 = 15 & 2 < 3") == "5 3 = 15 & 2 < 3"


def test_what_xml_cannot_hold_and_what_a_voice_cannot_read_become_spaces() -> None:
    assert plain("a\x00b\x1bc\rd\x85e\ud800f\uffffg\n\th") == "a b c d e f g\n\th"
    assert plain("¿Perdió su tarjeta? Ñandú © 2026 😀") == "¿Perdió su tarjeta? Ñandú © 2026 😀"  # plain keeps symbols
    spoken = for_speech("Listo 👍🏽, © Banco ® ° ¦ ❤️ 👨‍👩‍👧 ¡Adiós, señor Muñoz! 50 % ½ € ¥ § ¶")
    assert spoken == "Listo , Banco ¡Adiós, señor Muñoz! 50 % ½ € ¥ § ¶"


def test_split_text_never_exceeds_the_limit_or_cuts_words() -> None:
    text = "Palabra " * 1000 + "x" * 50
    pieces = split_text(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_long_digit_strings_are_masked_in_logs() -> None:
    assert mask_digits("tarjeta 4111-1111-1111-1234, tel +525512345678, pin 1234") == (
        "tarjeta ************1234, tel ********5678, pin 1234")
    # in a logged URL a '+' is %2B, whose 'B' is a word character
    assert mask_digits("/webhook?From=%2B5215512345678&To=%2b14155238886&n=12") == (
        "/webhook?From=%2B*********5678&To=%2b*******8886&n=12")


def test_markup_cleaning_keeps_its_meaning_with_the_linear_patterns() -> None:
    assert for_speech("***negrita cursiva*** y **fuerte _suave_** ~~no~~ `código`") == (
        "negrita cursiva y fuerte suave no código")
    assert for_speech("[enlace](https://x.y) y [sin cerrar](https://x.y fin") == (
        "enlace y [sin cerrar](https://x.y fin")
    assert for_whatsapp("**fuerte *con cursiva* dentro** y ~~tachado~~") == "*fuerte _con cursiva_ dentro* y ~tachado~"
    assert for_whatsapp("## Título ##\n##   \n") == "*Título*\n##"


def test_hostile_markup_comes_out_clean() -> None:
    spoken = {shape: for_speech(text) for shape, text in HOSTILE_SHAPES.items()}
    assert spoken["stars"] == spoken["strike_runs"] == ""  # only marks: nothing to say
    assert spoken["underscore_words"] == "a" * 50_000
    assert spoken["bold_words"] == " ".join(["**a"] * 25_000).strip()  # never closed: not markup
    assert spoken["heading_then_spaces"] == "a b"
    assert spoken["open_brackets"] == HOSTILE_SHAPES["open_brackets"]
    assert spoken["angle_brackets"] == HOSTILE_SHAPES["angle_brackets"]
    assert for_whatsapp(HOSTILE_SHAPES["heading_then_spaces"]) == "*a" + " " * 99_996 + "b*"


def test_a_text_is_cleaned_up_to_its_longest_and_no_further() -> None:
    assert len(for_whatsapp("a" * (LONGEST_TEXT + 10))) == LONGEST_TEXT
    assert len(for_speech("a " * LONGEST_TEXT)) == LONGEST_TEXT - 1
