"""Text on its way in (to Rasa) and out (to a speaker or a chat), and in logs."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()\s]+)\)")
_MARKDOWN_MARKS = re.compile(r"(\*{1,3}|_{1,3}|~~|`{1,3})(?=\S)(.+?)(?<=\S)\1")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_SPACES = re.compile(r"[ \t]+")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_STRAY_MARKS = re.compile(r"(?<!\S)[#*_~`>|]+(?!\S)")
_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+")
_LONG_DIGITS = re.compile(r"(?<![\w+])(\+?\d[\d \-]{5,}\d)(?!\w)")


def _is_xml_char(char: str) -> bool:
    code = ord(char)
    return char in "\t\n\r" or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _is_pictograph(char: str) -> bool:
    category = unicodedata.category(char)
    code = ord(char)
    return (
        category == "So"
        or category == "Cs"
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or code == 0x200D  # zero-width joiner inside emoji sequences
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
    )


def plain(text: str) -> str:
    """Text that is safe in XML: no control characters, no noncharacters."""
    return "".join(ch if _is_xml_char(ch) and unicodedata.category(ch) != "Cc" or ch in "\n\t" else " " for ch in text)


def for_speech(text: str) -> str:
    """What a text-to-speech voice should read: no markdown marks, emoji or stray symbols."""
    text = plain(text)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    for _ in range(2):  # nested marks such as ***bold italic***
        text = _MARKDOWN_MARKS.sub(r"\2", text)
    text = _HTML_TAG.sub("", text)
    text = "".join(" " if _is_pictograph(ch) else ch for ch in text)
    text = _STRAY_MARKS.sub(" ", text)
    text = text.replace("\n", " ").replace("\t", " ")
    return _SPACES.sub(" ", text).strip()


def split_text(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most `limit` characters, at sentence ends, else at spaces."""
    units: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        units.extend([sentence] if len(sentence) <= limit else _pack(_words(sentence, limit), limit))
    return _pack(units, limit)


def _words(sentence: str, limit: int) -> Iterator[str]:
    for word in sentence.split(" "):
        # a "word" longer than the limit has no better place to cut
        yield from (word[start:start + limit] for start in range(0, len(word), limit))


def _pack(units: Iterable[str], limit: int) -> list[str]:
    """Join units with spaces into as few pieces of at most `limit` characters as their order allows."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        joined = f"{current} {unit}".strip()
        if len(joined) <= limit:
            current = joined
            continue
        if current:
            pieces.append(current)
        current = unit
    if current:
        pieces.append(current)
    return pieces


def from_user(text: str | None) -> str:
    """A user's words as Rasa may see them: never starting with '/', which Rasa runs as a command."""
    cleaned = plain(text or "").strip()
    return cleaned.lstrip("/ \t\n").strip()


def fold(text: str) -> str:
    """Case, accent and punctuation-insensitive form, to match a spoken word to a button title."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w\s]", " ", letters).split())


def mask_digits(text: str) -> str:
    """Hide long digit strings (card and phone numbers) in logs, keeping the last four."""
    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(1))
        return "*" * (len(digits) - 4) + digits[-4:]
    return _LONG_DIGITS.sub(mask, text)
