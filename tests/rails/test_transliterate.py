"""Names to Latin by the stated standards (specs/adr/0120): ELOT 743 for Greek, the Bulgarian
system (ICAO 9303 for other letters) for Cyrillic, anyascii for the rest; never blanked out."""

from __future__ import annotations

import pytest

from rails.iso20022 import sepa
from rails.nacha import ach_text
from rails.transliterate import to_latin


@pytest.mark.parametrize(("text", "latin"), [
    # ELOT 743 type 2: digraphs, the upsilon diphthongs, mp/b, gg/ng, accents and case
    ("Παπαδόπουλος", "Papadopoulos"),
    ("Ευάγγελος", "Evangelos"),          # ευ before a vowel: ev; γγ: ng
    ("Ελευθέριος", "Eleftherios"),       # ευ before θ: ef
    ("Αυγερινός", "Avgerinos"),          # αυ before γ: av
    ("Ναύπλιο", "Nafplio"),              # αυ before π: af
    ("Μπάμπης", "Bampis"),               # μπ: b at the start, mp inside
    ("Ξενοφών Ψυχάρης", "Xenofon Psycharis"),
    ("ΘΕΟΔΩΡΟΣ Θεόδωρος", "THEODOROS Theodoros"),
    ("Ευτυχία", "Eftychia"),
    ("Σπύρος Λαϊκός", "Spyros Laikos"),  # diaeresis: no diphthong
    # the Bulgarian Streamlined System; ICAO 9303 for letters Bulgarian lacks
    ("Щукин Цветков Жеков", "Shtukin Tsvetkov Zhekov"),
    ("Юлия Ъгълова", "Yuliya Agalova"),
    ("Хаджиев", "Hadzhiev"),
    ("Їжак Єва", "Izhak Ieva"),
    ("Љиљана Њего", "Ljiljana Njego"),
    # anyascii for everything else
    ("Müller & Söhne Straße", "Muller & Sohne Strasse"),
    ("Ærø Ørsted Łódź Œuvre", "Aero Orsted Lodz Oeuvre"),
    ("Café Crème", "Cafe Creme"),
])
def test_to_latin(text: str, latin: str) -> None:
    assert to_latin(text) == latin


def test_both_writers_use_it_and_nothing_becomes_blank() -> None:
    for name in ("Παπαδόπουλος", "Щукин", "Ærø", "東京"):
        assert sepa.transliterate(name)
        assert ach_text(name)
        assert sepa.charset_problem(sepa.transliterate(name)) is None
    assert sepa.transliterate("Müller & Söhne") == "Muller + Sohne"  # & is outside SEPA's set
    assert ach_text("  ærø   café  ") == "AERO CAFE"  # upper case, left-justified, folded
