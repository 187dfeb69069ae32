"""Name the format of a file lokal does not read, so the skip reason says what it is.

From the file's first bytes (its signature) where they are known, else from its name
(:mod:`mimetypes`). Legacy Office files (OLE2) are pointed at the format and extra lokal does
read.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

#: Leading bytes -> the format's name (longest signatures first where they share a prefix).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"BM", "BMP image"),
    (b"\x00\x00\x01\x00", "ICO image"),
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "zip archive"),
    (b"PK\x05\x06", "zip archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"(\xb5/\xfd", "zstd archive"),
    (b"7z\xbc\xaf'\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x7fELF", "ELF executable or library"),
    (b"MZ", "Windows executable"),
    (b"\xca\xfe\xba\xbe", "Java class or Mach-O universal binary"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\x00asm", "WebAssembly module"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"ID3", "MP3 audio"),
    (b"OggS", "Ogg audio or video"),
    (b"fLaC", "FLAC audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"wOFF", "WOFF font"),
    (b"wOF2", "WOFF2 font"),
    (b"\x00\x01\x00\x00\x00", "TrueType font"),
    (b"OTTO", "OpenType font"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE2 compound file"),
)
#: Legacy binary Office formats (OLE2) by suffix -> (what it is, what lokal reads instead).
_LEGACY_OFFICE = {
    ".doc": ("Word 97-2003 document (.doc)", ".docx", "docx"),
    ".xls": ("Excel 97-2003 workbook (.xls)", ".xlsx", "xlsx"),
    ".ppt": ("PowerPoint 97-2003 presentation (.ppt)", ".pptx", "pptx"),
}


def describe(path: Path, data: bytes) -> str:
    """Why a binary file is skipped, naming its format as well as it can be told."""
    suffix = path.suffix.lower()
    name = _signature(data)
    if suffix in _LEGACY_OFFICE and name in (None, "OLE2 compound file"):
        what, modern, extra = _LEGACY_OFFICE[suffix]
        return (
            f"{what}: a legacy binary format lokal does not read; saved as {modern} it is "
            f"read with pip install 'lokal[{extra}]'"
        )
    if name == "OLE2 compound file" and suffix == ".msg":
        name = "Outlook message (.msg)"
    if data[4:8] == b"ftyp":
        name = "MP4/QuickTime media"
    elif data[:4] == b"RIFF" and len(data) >= 12:
        name = {b"WEBP": "WebP image", b"WAVE": "WAV audio", b"AVI ": "AVI video"}.get(
            data[8:12], "RIFF media"
        )
    guessed, _ = mimetypes.guess_type(path.name, strict=False)
    shown = suffix or "no suffix"
    if name is not None:
        return f"{name} ({shown}): a binary format lokal does not read"
    if guessed is not None and guessed != "application/octet-stream":
        return f"{guessed} ({shown}): a binary format lokal does not read"
    return f"binary data of an unknown format ({shown}): not text, and no format lokal reads"


def is_binary(data: bytes) -> bool:
    """The data starts with a signature that has a control byte in it (PNG, zip, gzip, ELF,
    SQLite...): binary, whatever it decodes to. Printable signatures (``BM``, ``OTTO``) are
    left to the zero-byte test, since text may start with them."""
    return _signature(data, strong=True) is not None


def _signature(data: bytes, *, strong: bool = False) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic) and (not strong or any(b < 32 or b > 126 for b in magic)):
            return name
    return None
