"""Names in any script to the Latin letters a bank file carries: one module for SEPA and NACHA.

A payee's or payer's name reaches a bank file in whatever script the company wrote it in, and
both formats carry far less: SEPA's basic Latin set (EPC, ``rails.iso20022.sepa.SEPA_CHARSET``)
and NACHA's printable ASCII, upper case. Dropping what does not fit blanks a name out
(``Straße`` → ``STRA E``; a Greek or Cyrillic name → nothing, so a payment to it can never be
made). So :func:`to_latin` transliterates as losslessly as the target allows (specs/adr/0120):

- **Greek** by ELOT 743:2001 type 2 (transcription; = ISO 843:1997 type 2, the system Greek
  passports use): ``ου`` → ``ou``, ``αυ``/``ευ``/``ηυ`` → ``av``/``ev``/``iv`` before a vowel
  or voiced consonant and ``af``/``ef``/``if`` otherwise, ``μπ`` → ``b`` at the start or end of
  a word and ``mp`` inside it, ``γγ``/``γξ``/``γχ`` → ``ng``/``nx``/``nch``, accents dropped.
- **Cyrillic** by the Bulgarian Transliteration Act (2009, the "Streamlined System" that
  Bulgarian registers and banks write names in; Bulgaria is the SEPA country whose script is
  Cyrillic): ``Щ`` → ``Sht``, ``Ъ`` → ``A``, ``Ю`` → ``Yu``. Letters that alphabet lacks
  (Russian ``Ё Ы Э``, Ukrainian ``Є І Ї Ґ``, Serbian and Macedonian ``Ђ Ј Љ Њ Ћ Џ Ѓ Ќ Ѕ``) use
  ICAO Doc 9303's values.
- **Everything else** by ``anyascii`` (maintained tables for all of Unicode): ``ß`` → ``ss``,
  ``Æ`` → ``AE``, ``Ø`` → ``O``, ``Ł`` → ``L``, ``É`` → ``E``.

Case is kept (NACHA upper-cases afterwards); a digraph keeps the case of the word
(``ΘΕΟΔΩΡΟΣ`` → ``THEODOROS``, ``Θεόδωρος`` → ``Theodoros``). References are never passed
through here: a reference that changes on the way stops matching.
"""

from __future__ import annotations

import unicodedata

from anyascii import anyascii

# -- Greek: ELOT 743 type 2 ----------------------------------------------------------------

_GREEK = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th",
    "ι": "i", "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p",
    "ρ": "r", "σ": "s", "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps",
    "ω": "o",
}
_GREEK_PAIRS = {"ου": "ou", "γγ": "ng", "γξ": "nx", "γχ": "nch"}
_UPSILON_DIPHTHONGS = {"α": "a", "ε": "e", "η": "i"}
# After αυ/ευ/ηυ: v before a vowel or a voiced consonant, f before a voiceless one or at the end.
_VOICED = set("αεηιουωβγδζλμνρ")


def _is_greek(ch: str) -> bool:
    return "\u0370" <= ch <= "\u03ff" or "\u1f00" <= ch <= "\u1fff"


def _greek_base(ch: str) -> tuple[str, bool]:
    """The lower-case letter without accents, and whether it carried a diaeresis."""
    decomposed = unicodedata.normalize("NFD", ch)
    return decomposed[0].lower(), "\u0308" in decomposed


def _cased(latin: str, upper: bool, next_upper: bool) -> str:
    if not upper:
        return latin
    return latin.upper() if next_upper or len(latin) == 1 else latin.capitalize()


def _greek_word(word: str) -> str:
    letters = [_greek_base(ch) for ch in word]
    base = [b for b, _ in letters]
    upper = [ch != ch.lower() for ch in word]
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        b = base[i]
        nxt = base[i + 1] if i + 1 < n else ""
        nxt_diaeresis = letters[i + 1][1] if i + 1 < n else False
        next_upper = i + 1 < n and upper[i + 1]
        pair = b + nxt
        if b in _UPSILON_DIPHTHONGS and nxt == "υ" and not nxt_diaeresis:
            after = base[i + 2] if i + 2 < n else ""
            latin = _UPSILON_DIPHTHONGS[b] + ("v" if after in _VOICED else "f")
            step = 2
        elif pair in _GREEK_PAIRS and not nxt_diaeresis:
            latin, step = _GREEK_PAIRS[pair], 2
        elif pair == "μπ":
            edge = i == 0 or i + 2 >= n
            latin, step = ("b" if edge else "mp"), 2
        elif b in _GREEK:
            latin, step = _GREEK[b], 1
        else:
            latin, step = anyascii(word[i]), 1
        out.append(_cased(latin, upper[i], next_upper))
        i += step
    return "".join(out)


# -- Cyrillic: the Bulgarian Streamlined System, ICAO 9303 for other letters --------------

_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p",
    "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch",
    "ш": "sh", "щ": "sht", "ъ": "a", "ь": "y", "ю": "yu", "я": "ya",
    # ICAO Doc 9303 for letters the Bulgarian alphabet lacks
    "ё": "e", "ы": "y", "э": "e", "є": "ie", "і": "i", "ї": "i", "ґ": "g", "ђ": "d",
    "ј": "j", "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz", "ѓ": "g", "ќ": "k", "ѕ": "dz",
    "ў": "u",
}


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff"


def _cyrillic_word(word: str) -> str:
    out = []
    for i, ch in enumerate(word):
        low = ch.lower()
        latin = _CYRILLIC.get(low)
        if latin is None:
            latin = anyascii(ch)
            out.append(latin)
            continue
        next_upper = i + 1 < len(word) and word[i + 1] != word[i + 1].lower()
        out.append(_cased(latin, ch != low, next_upper))
    return "".join(out)


def _runs(text: str) -> list[tuple[str, str]]:
    """`text` as runs of (script, chars): "greek", "cyrillic" or "other"."""
    runs: list[tuple[str, str]] = []
    for ch in text:
        script = "greek" if _is_greek(ch) else "cyrillic" if _is_cyrillic(ch) else "other"
        if runs and runs[-1][0] == script:
            runs[-1] = (script, runs[-1][1] + ch)
        else:
            runs.append((script, ch))
    return runs


def to_latin(text: str) -> str:
    """`text` in printable ASCII, transliterated by the standards above (never shortened)."""
    out = []
    for script, chars in _runs(unicodedata.normalize("NFC", text)):
        if script == "greek":
            out.append(_greek_word(chars))
        elif script == "cyrillic":
            out.append(_cyrillic_word(chars))
        else:
            out.append(anyascii(chars))
    return "".join(ch if " " <= ch <= "~" else " " for ch in "".join(out))
