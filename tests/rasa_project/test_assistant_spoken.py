import pytest
from actions.spoken import digits_in, in_groups, last_four_digits, one_by_one


@pytest.mark.parametrize(
    "heard, digits",
    [
        ("1234", "1234"),
        ("1 2 3 4", "1234"),
        ("1-2-3-4", "1234"),
        ("uno dos tres cuatro", "1234"),
        ("Uno, dos, tres, cuatro.", "1234"),
        ("doce treinta y cuatro", "1234"),
        ("termina en cinco seis siete ocho", "5678"),
        ("cero cero siete uno", "0071"),
        ("diecinueve veinte", "1920"),
        ("es una que termina en 4321", "4321"),
        ("mil doscientos treinta y cuatro", "1234"),
        ("cuatro mil trescientos veintiuno", "4321"),
        ("cincuenta y seis setenta y ocho", "5678"),
        ("quinientos sesenta y siete ocho", "5678"),
        ("1,234", "1234"),
    ],
)
def test_four_digits_are_understood_spoken_or_pressed(heard: str, digits: str) -> None:
    assert last_four_digits(heard) == digits


@pytest.mark.parametrize("heard", ["", "hola", "123", "12345", "uno dos tres", "quiero una persona",
                                   "ciento veinte", "tres mil cuatrocientos veinte mil"])
def test_anything_but_four_digits_is_refused(heard: str) -> None:
    assert last_four_digits(heard) is None


def test_tens_without_unit_read_as_two_digits() -> None:
    assert digits_in("cuarenta") == "40"


@pytest.mark.parametrize("heard, digits", [
    ("mil", "1000"), ("dos mil quinientos", "2500"), ("ciento cinco", "105"), ("quinientas doce", "512"),
    ("novecientos noventa y nueve", "999"), ("doce mil", "12000"), ("tres y cuatro", "34"), ("mil mil", "10001000"),
])
def test_number_words_compose_as_spanish_composes_them(heard: str, digits: str) -> None:
    assert digits_in(heard) == digits


def test_digits_are_read_one_by_one_and_references_in_groups() -> None:
    assert one_by_one("1234") == "1 2 3 4"
    assert in_groups("48213067") == "4 8 2 1, 3 0 6 7"
