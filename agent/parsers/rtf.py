r"""RTF (striprtf): the text without the control words; ``\'hh`` bytes decoded in the code page
the document declares (``\ansicpgN``, a font's ``\fcharset``; Windows-1252 when it declares
none), ``\uN`` as Unicode; table cells joined by ``|``. Footnotes are kept, where they stand
(striprtf would drop them as a destination); the pages' headers and footers are not read."""

from __future__ import annotations

import re

from .base import Parsed, Unsupported, needs

#: A footnote group (``{\footnote ...}``, ``{\*\footnote ...}``) opened as an ordinary group.
_FOOTNOTE = re.compile(r"\{\\\*?\\footnote(?![a-z])[ ]?")


def rtf(data: bytes) -> Parsed:
    module = needs("striprtf.striprtf", "RTF", "striprtf", "rtf")
    if not data.lstrip().startswith(b"{\\rtf"):
        msg = "not an RTF file: it does not start with {\\rtf"
        raise Unsupported(msg)
    # RTF is 7-bit: latin-1 maps each byte to itself; striprtf decodes the \'hh escapes
    source = _FOOTNOTE.sub(r"{\\par ", data.decode("latin-1"))
    text = module.rtf_to_text(source, encoding="cp1252", errors="replace")
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return Parsed("\n".join(lines).strip(), "rtf")
