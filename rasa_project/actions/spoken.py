"""Turning what a caller says or presses into digits, and digits into what a voice reads well."""

import re
import unicodedata
from typing import List, Optional

_UNITS = {
    "cero": "0", "uno": "1", "dos": "2", "tres": "3",
    "cuatro": "4", "cinco": "5", "seis": "6", "siete": "7", "ocho": "8", "nueve": "9",
}
_TEENS_AND_TWENTIES = {
    "diez": "10", "once": "11", "doce": "12", "trece": "13", "catorce": "14",
    "quince": "15", "dieciseis": "16", "diecisiete": "17", "dieciocho": "18",
    "diecinueve": "19", "veinte": "20", "veintiuno": "21", "veintiun": "21",
    "veintidos": "22", "veintitres": "23", "veinticuatro": "24", "veinticinco": "25",
    "veintiseis": "26", "veintisiete": "27", "veintiocho": "28", "veintinueve": "29",
}
_TENS = {
    "treinta": "3", "cuarenta": "4", "cincuenta": "5", "sesenta": "6",
    "setenta": "7", "ochenta": "8", "noventa": "9",
}


def _plain_words(text: str) -> List[str]:
    without_accents = "".join(
        char for char in unicodedata.normalize("NFKD", text.lower())
        if not unicodedata.combining(char)
    )
    return re.findall(r"[a-z]+|\d+", without_accents)


def digits_in(text: str) -> str:
    """Every digit the text says, in order: "1234", "1 2 3 4", "uno dos tres cuatro",
    "doce treinta y cuatro" all give "1234". Words that are not numbers are ignored."""
    words = _plain_words(text)
    digits: List[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word.isdigit():
            digits.append(word)
        elif word in _UNITS:
            digits.append(_UNITS[word])
        elif word in _TEENS_AND_TWENTIES:
            digits.append(_TEENS_AND_TWENTIES[word])
        elif word in _TENS:
            has_unit = (
                index + 2 < len(words)
                and words[index + 1] == "y"
                and words[index + 2] in _UNITS
                and _UNITS[words[index + 2]] != "0"
            )
            if has_unit:
                digits.append(_TENS[word] + _UNITS[words[index + 2]])
                index += 2
            else:
                digits.append(_TENS[word] + "0")
        index += 1
    return "".join(digits)


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
