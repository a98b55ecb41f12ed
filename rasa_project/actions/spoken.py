"""Turning what a caller says or presses into digits, and digits into what a voice reads well."""

import re
import unicodedata
from typing import List, Optional

_UNITS = {
    "cero": 0, "uno": 1, "dos": 2, "tres": 3,
    "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
}
_TEENS_AND_TWENTIES = {
    "diez": 10, "once": 11, "doce": 12, "trece": 13, "catorce": 14,
    "quince": 15, "dieciseis": 16, "diecisiete": 17, "dieciocho": 18,
    "diecinueve": 19, "veinte": 20, "veintiuno": 21, "veintiun": 21,
    "veintidos": 22, "veintitres": 23, "veinticuatro": 24, "veinticinco": 25,
    "veintiseis": 26, "veintisiete": 27, "veintiocho": 28, "veintinueve": 29,
}
_TENS = {
    "treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60,
    "setenta": 70, "ochenta": 80, "noventa": 90,
}
_HUNDREDS = {
    "cien": 100, "ciento": 100, "doscientos": 200, "trescientos": 300, "cuatrocientos": 400,
    "quinientos": 500, "seiscientos": 600, "setecientos": 700, "ochocientos": 800, "novecientos": 900,
}
_HUNDREDS.update({name[:-2] + "as": value for name, value in _HUNDREDS.items() if name.endswith("os")})
_THOUSAND = "mil"


def _plain_words(text: str) -> List[str]:
    without_accents = "".join(
        char for char in unicodedata.normalize("NFKD", text.lower())
        if not unicodedata.combining(char)
    )
    return re.findall(r"[a-z]+|\d+", without_accents)


class _Numbers:
    """Reads number words left to right into whole numbers: a word joins the number being read when
    Spanish composes them that way ("mil" after "dos", "treinta" after "doscientos", "cuatro" after
    "treinta y"); otherwise the number is complete and the word starts the next one."""

    def __init__(self) -> None:
        self.read: List[str] = []
        self.value: Optional[int] = None
        self.last = ""  # the kind of the latest word of `value`: unit, teen, tens, hundreds, thousand

    def finish(self) -> None:
        if self.value is not None:
            self.read.append(str(self.value))
        self.value, self.last = None, ""

    def start(self, value: int, kind: str) -> None:
        self.finish()
        self.value, self.last = value, kind

    def join(self, value: int, kind: str) -> None:
        self.value, self.last = (self.value or 0) + value, kind

    def ends_in_round(self, size: int) -> bool:
        """True when the number so far is a whole hundred or thousand: "doscientos", "mil"."""
        return self.value is not None and self.last in ("hundreds", "thousand") and self.value % size == 0

    def add(self, word: str, after_y: bool) -> None:
        if word in _UNITS:
            unit = _UNITS[word]
            if unit and ((after_y and self.last == "tens") or self.ends_in_round(100)):
                self.join(unit, "unit")
            else:
                self.start(unit, "unit")
        elif word in _TEENS_AND_TWENTIES or word in _TENS:
            value = _TEENS_AND_TWENTIES.get(word) or _TENS[word]
            kind = "tens" if word in _TENS else "teen"
            if self.ends_in_round(100):
                self.join(value, kind)
            else:
                self.start(value, kind)
        elif word in _HUNDREDS:
            if self.ends_in_round(1000) and self.last == "thousand":
                self.join(_HUNDREDS[word], "hundreds")
            else:
                self.start(_HUNDREDS[word], "hundreds")
        elif word == _THOUSAND:
            if self.value and self.value < 1000 and self.last != "thousand":
                self.value, self.last = self.value * 1000, "thousand"
            else:
                self.start(1000, "thousand")


def digits_in(text: str) -> str:
    """Every digit the text says, in order: "1234", "1 2 3 4", "uno dos tres cuatro",
    "doce treinta y cuatro" and "mil doscientos treinta y cuatro" all give "1234".
    Words that are not numbers are ignored."""
    numbers = _Numbers()
    after_y = False
    for word in _plain_words(text):
        if word.isdigit():
            numbers.finish()
            numbers.read.append(word)
        elif word in _UNITS or word in _TEENS_AND_TWENTIES or word in _TENS or word in _HUNDREDS \
                or word == _THOUSAND:
            numbers.add(word, after_y)
        elif word != "y":
            numbers.finish()
        after_y = word == "y"
    numbers.finish()
    return "".join(numbers.read)


def last_four_digits(text: str) -> Optional[str]:
    """The four digits a caller gave for the end of a card, or None if they did not give exactly four."""
    digits = digits_in(text or "")
    return digits if len(digits) == 4 else None


def one_by_one(digits: str) -> str:
    """ "1234" -> "1 2 3 4", so a voice reads each digit instead of "mil doscientos"."""
    return " ".join(digits)


def in_groups(digits: str, size: int = 4) -> str:
    """ "48213067" -> "4 8 2 1, 3 0 6 7": digit by digit, with a pause between groups."""
    groups = [digits[start:start + size] for start in range(0, len(digits), size)]
    return ", ".join(one_by_one(group) for group in groups)
