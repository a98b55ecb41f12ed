"""Which of the assistant's buttons a user's answer chose, the same on the phone and in a chat."""
from __future__ import annotations

from collections.abc import Sequence

from ..text import fold
from .turn import Button

SPOKEN_NUMBERS = {
    "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
MENU_DIGITS = 3  # a menu is read out or listed: a few buttons, never a thousand


def choose_button(answer: str, buttons: Sequence[Button]) -> Button | None:
    """The button an answer names: its number ("2", "2.", "dos", a keypad 2, or a decimal digit of any
    script) or its title, in any case and accents. None when it names none."""
    folded = fold(answer)
    # isdecimal(), not isdigit(): '፩' is a digit that int() refuses; and int() refuses more than
    # 4300 digits too, which no menu needs ('²' and '①' are already '2' and '1' once folded).
    number = int(folded) if folded.isdecimal() and len(folded) <= MENU_DIGITS else SPOKEN_NUMBERS.get(folded)
    if number is not None and 1 <= number <= len(buttons):
        return buttons[number - 1]
    return next((b for b in buttons if folded and fold(b.title) == folded), None)
