"""Text on its way in (to Rasa) and out (to a speaker or a chat), and in logs."""
from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator

# Every pattern is linear by construction: a repeat either has a fixed bound or stops at the first
# character that could end it (the mark it looks for is not allowed inside it), so from any start the
# engine scans at most up to the next such character, and a failed match never rescans the rest of the
# text. `.+?` up to a closing mark, or `\s*` that may cross lines, made 48 kB of markup take 14 s.
_LINK = re.compile(r"!?\[([^\[\]\n]{0,500})\]\(([^()\s]{1,2000})\)")
_MARKS_SPOKEN = tuple(re.compile(rf"({mark})(?=[^\s{char}])([^{char}\n]+?)(?<=\S)\1") for mark, char in (
    (r"\*{1,3}", r"*"), (r"_{1,3}", r"_"), (r"~~", r"~"), (r"`{1,3}", r"`")))
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*)$", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,9}[.)])[ \t]+", re.MULTILINE)
_SPACES = re.compile(r"[ \t]+")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_HTML_BREAK = re.compile(r"<(?:br|/?p|/?div|/?li)\b[^<>]{0,200}>", re.IGNORECASE)  # a tag that ends a line
_STRAY_MARKS = re.compile(r"(?<!\S)[#*_~`>|]+(?!\S)")
_SENTENCE_END = re.compile(r"(?<=[.!?…;:])\s+")
# A number stands alone, or follows a URL-encoded "+" (%2B: its B is a word character) in a logged URL.
_LONG_DIGITS = re.compile(r"(?:(?<![\w+])|(?<=%2[Bb]))(\+?\d[\d \-]{5,}\d)(?!\w)")
# Bold may hold a single '*' or '_' (an italic inside), never its own two-character mark.
_BOLD = re.compile(r"\*\*(?=\S)((?:[^*\n]|\*(?!\*))+?)(?<=\S)\*\*|__(?=\S)((?:[^_\n]|_(?!_))+?)(?<=\S)__")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=[^\s~])([^~\n]+?)(?<=\S)~~")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_LEADING_SPACES_AND_SLASHES = re.compile(r"^[\s/]+")
# An HTML entity closed by its ';' only: html.unescape alone also takes "&para" in "?a=1&para=2" for '¶'.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
LONGEST_TEXT = 100_000  # characters of one text cleaned; more can be neither spoken (64 kB of TwiML) nor sent
_BOLD_MARK = "\x02"  # stands for WhatsApp's '*' while single '*' (markdown italics) become '_'


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


# What plain() replaces: control characters (category Cc) but newline and tab, and what XML 1.0 cannot
# hold (surrogates, U+FFFE, U+FFFF). One character class, so one scan in C instead of a call per character.
_NOT_PLAIN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Every Latin-1 character that is not a pictograph: text in Spanish or English is skipped in C, and only
# the characters left (emoji, symbols, other scripts) are looked up one by one.
_MAYBE_PICTOGRAPH = re.compile("[^" + re.escape("".join(chr(c) for c in range(0x100) if not _is_pictograph(chr(c)))) + "]")


def _unescaped(text: str) -> str:
    return _ENTITY.sub(lambda entity: html.unescape(entity[0]), text)


def plain(text: str) -> str:
    """Text that is safe in XML: no control characters, no noncharacters."""
    return _NOT_PLAIN.sub(" ", text)


def _no_pictographs(text: str) -> str:
    return _MAYBE_PICTOGRAPH.sub(lambda m: " " if _is_pictograph(m[0]) else m[0], text)


def without_markup(text: str) -> str:
    """The text that markdown and HTML mark up, without the marks: a link's words, bold's letters, HTML's entities
    as their characters; emoji kept. What shows where nothing renders markup (a WhatsApp button's title)."""
    text = plain(_unescaped(text[:LONGEST_TEXT]))
    text = _LINK.sub(r"\1", text)
    text = _HEADING.sub(r"\1", text)
    text = _BULLET.sub("", text)
    for _ in range(2):  # nested marks such as ***bold italic*** or **bold _italic_**
        for marks in _MARKS_SPOKEN:
            text = marks.sub(r"\2", text)
    return _HTML_TAG.sub("", _HTML_BREAK.sub("\n", text))


def for_speech(text: str) -> str:
    """What a text-to-speech voice should read: no markdown marks, emoji or stray symbols, and HTML's entities
    as the characters they stand for ("&amp;" is read "and", not "amp")."""
    text = _no_pictographs(without_markup(text))
    text = _STRAY_MARKS.sub(" ", text)
    text = text.replace("\n", " ").replace("\t", " ")
    return _SPACES.sub(" ", text).strip()


def for_whatsapp(text: str) -> str:
    """Markdown as WhatsApp writes it: *bold*, _italic_, ~strike~, links as "text (url)"; no HTML tags, and
    HTML's entities as their characters."""
    text = plain(_unescaped(text[:LONGEST_TEXT])).replace(_BOLD_MARK, " ")
    text = _LINK.sub(lambda m: f"{m[1]} ({m[2]})" if m[1].strip() and m[1] != m[2] else m[2], text)
    text = _HTML_TAG.sub("", _HTML_BREAK.sub("\n", text))
    text = _HEADING.sub(_bold_heading, text)
    text = _BOLD.sub(lambda m: _BOLD_MARK + (m[1] or m[2]) + _BOLD_MARK, text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    return text.replace(_BOLD_MARK, "*").strip()


def _bold_heading(heading: re.Match[str]) -> str:
    title = heading[1].rstrip().rstrip("#").strip("*_ \t")  # a closing "##" is markdown too
    return _BOLD_MARK + title + _BOLD_MARK if title else heading[0]


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut between paragraphs, else between sentences."""
    pieces: list[str] = []
    current = ""
    for paragraph in filter(None, (p.strip() for p in _PARAGRAPH_BREAK.split(text))):
        for part in [paragraph] if len(paragraph) <= limit else split_text(paragraph, limit):
            joined = f"{current}\n\n{part}" if current else part
            if len(joined) <= limit:
                current = joined
            else:
                pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


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
    """A user's words as Rasa may see them: never starting with '/', which Rasa runs as a command. Every
    leading space and slash goes, whatever the space: a no-break or ideographic space between two slashes
    ("/\u00a0/restart") would otherwise be stripped last and leave the command."""
    return _LEADING_SPACES_AND_SLASHES.sub("", plain(text or "")).strip()


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
