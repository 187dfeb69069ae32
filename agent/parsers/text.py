"""Text bytes to text: one encoding for the whole file, never a silent mix.

A byte-order mark decides (UTF-8, UTF-16, UTF-32); then UTF-16 without a mark, recognised by
its zero bytes all falling on one side of each code unit; otherwise strict UTF-8; otherwise,
when the text is overwhelmingly UTF-8 with a few broken bytes, UTF-8 with those bytes replaced
(and a warning the document's record keeps); otherwise charset-normalizer's answer, taken as
it is. Zero bytes anywhere else mean binary data (:mod:`.binary` names its format).
"""

from __future__ import annotations

import codecs

from .base import Unsupported

_SNIFF = 8192
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
REPLACED = "utf-8 ("
#: Decoded as UTF-8 with replacement when there are at least this many valid multi-byte
#: characters per invalid sequence (a legacy 8-bit file has none or next to none).
_UTF8_MAJORITY = 4
#: UTF-16 without a byte-order mark: at least this share of the code units in the first
#: :data:`_SNIFF` bytes have a zero high byte (Latin script, digits, punctuation, newlines)...
_UTF16_ZERO_UNITS = 0.3
#: ...and at most this share of the other side's bytes are zero (binary data has zeros on
#: both sides).
_UTF16_OTHER_SIDE = 0.02


def decode(data: bytes) -> tuple[str, str]:
    """Decode text bytes, or raise :class:`Unsupported` for binary data."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    if b"\x00" in data[:_SNIFF]:
        found = _utf16_without_bom(data)
        if found is None:
            msg = "binary data (zero bytes, and not UTF-16 or UTF-32 text)"
            raise Unsupported(msg)
        return found
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - bad
    if multibyte >= _UTF8_MAJORITY * bad:
        # UTF-8 with a few broken bytes (a truncated write, one pasted Latin-1 word): reading
        # it all as a legacy code page would garble every valid character instead
        return text, _replaced(bad)
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return text, _replaced(bad)
    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        msg = "not text in any encoding charset-normalizer knows"
        raise Unsupported(msg)
    # The detector's answer, whatever language it recognised (issue 16: overriding an
    # "Unknown" language with cp1252 turned one-line Polish cp1250 text into mojibake). Only
    # where it cannot tell its candidates apart (a few words: every one equally clean) is
    # its first one, an arbitrary pick, replaced by the likeliest reading of the tied ones.
    tied = [
        m
        for m in matches
        if m.chaos <= best.chaos + _TIE_CHAOS and m.coherence >= best.coherence - _TIE_COHERENCE
    ]
    if _unlikely(str(best), best.encoding)[:3] != (0, 0, 0):
        # garbled-looking (scripts mixed in a word, symbols): charset-normalizer tries no
        # single-byte code page once a CJK one decodes, so ask for those readings too
        tied.extend(from_bytes(data, cp_isolation=list(_SINGLE_BYTE)))
    if len(tied) > 1:
        best = min(tied, key=lambda m: _unlikely(str(m), m.encoding))
    return str(best), best.encoding


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """UTF-16 text without a byte-order mark (Windows tools write it), or None. Text in a
    script whose every code unit has a non-zero high byte (CJK only, no spaces or newlines)
    has no zero bytes and is left to charset-normalizer."""
    head = data[:_SNIFF]
    head = head[: len(head) - len(head) % 2]
    units = len(head) // 2
    if units == 0:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    for zeros, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros >= _UTF16_ZERO_UNITS * units and other <= _UTF16_OTHER_SIDE * units:
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return None  # an unpaired surrogate or an odd length: not UTF-16 text
            if _mostly_printable(text):
                return text, encoding
    return None


def _mostly_printable(text: str) -> bool:
    sample = text[: _SNIFF // 2]
    control = sum(1 for c in sample if ord(c) < 32 and c not in "\t\n\r\f")
    return control <= 0.01 * len(sample)


#: charset-normalizer's candidates this close to its best one (in its mess and language
#: coherence ratios, 0..1) are taken as tied with it: one sentence of German scores HP Roman-8
#: at 0.48 and Windows-1250 at 0.43.
_TIE_CHAOS = 0.01
_TIE_COHERENCE = 0.1
#: Where candidates tie, the more widely used encoding first (Windows code pages before the
#: ISO and DOS ones; the web's order for the rest).
_COMMON = (
    "cp1252",
    "latin_1",
    "iso8859_15",
    "cp1251",
    "cp1250",
    "iso8859_2",
    "cp932",
    "shift_jis",
    "gb18030",
    "gb2312",
    "cp949",
    "euc_kr",
    "big5",
    "euc_jp",
    "cp1253",
    "cp1254",
    "cp1257",
    "koi8_r",
    "cp1256",
    "cp1255",
    "cp874",
    "cp1258",
)
#: The code pages asked for when the detector's answer looks garbled.
_SINGLE_BYTE = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257")
#: Scripts a text in one language mixes (Japanese: kanji and kana).
_SCRIPT_GROUPS = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "IDEOGRAPHIC": "CJK"}


def _unlikely(text: str, encoding: str) -> tuple[int, int, int, int]:
    """How unlikely a reading of a short text is, lowest first: letters of several scripts
    (``Crﻟme``: Latin and Arabic; ``Falsches 躡en``: German read as GB18030), symbols among
    the non-ASCII characters (``╧ЁштхҐ``: box drawing), a Latin text whose letters are mostly
    accented (``Ïðèâåò``: Cyrillic read as Windows-1252) or non-ASCII letters all in capitals,
    then how rarely the encoding is used."""
    import unicodedata

    scripts: set[str] = set()
    symbols = accented = letters = upper = lower = 0
    for c in text:
        if c.isascii():
            if c.isalpha():
                letters += 1
                scripts.add("LATIN")
            continue
        category = unicodedata.category(c)
        script = unicodedata.name(c, "?").split(" ")[0]
        if script == "HALFWIDTH":  # half-width katakana: legacy, next to unused in text
            symbols += 1
        elif category[0] in "LM":
            letters += category[0] == "L"
            scripts.add(_SCRIPT_GROUPS.get(script, script))
            accented += script == "LATIN"
            upper += c.isupper()
            lower += c.islower()
        elif category[0] in "SC" or c == "\ufffd":
            symbols += 1
    latin_heavy = accented > letters / 2
    shouting = upper >= 3 and not lower  # 'ОТДЬНМПВ': Chinese read as Windows-1251
    rank = _COMMON.index(encoding) if encoding in _COMMON else len(_COMMON)
    return (max(len(scripts) - 1, 0), symbols, int(latin_heavy or shouting), rank)


def _replaced(bad: int) -> str:
    return f"{REPLACED}{bad} invalid byte sequence{'s' if bad != 1 else ''} replaced)"
