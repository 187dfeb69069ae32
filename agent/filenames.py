r"""Document URIs for file paths, whatever bytes the file names hold.

A document's URI is its absolute path as text. A file name that is not valid UTF-8
(``caf\xe9.txt`` from a Latin-1 share: Python holds it with surrogate escapes, which SQLite,
JSON and a UTF-8 terminal refuse) is indexed too: its undecodable bytes are written ``\xNN``
and a backslash ``\\``, so every URI is printable, valid UTF-8, distinct for distinct
paths, prefixed by its directory's URI, and leads back to the file's exact bytes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["inside", "path_of", "uri_of"]

_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def uri_of(path: Path) -> str:
    r"""The document URI of ``path``: its text when the name is valid UTF-8 with no backslash
    (almost always), else its bytes with ``\\`` for a backslash and ``\xNN`` for each byte
    that is not UTF-8. Distinct paths get distinct URIs; the directory's URI prefixes its
    files' URIs."""
    raw = os.fsencode(path)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")


def path_of(uri: str) -> Path:
    """The path a URI from :func:`uri_of` names (the inverse)."""
    if "\\" not in uri:
        return Path(uri)
    raw = _ESCAPE.sub(
        lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1][1:], 16)]), uri.encode()
    )
    return Path(os.fsdecode(raw))


def inside(uri: str, root_uri: str) -> bool:
    """Whether ``uri`` is ``root_uri`` or below it."""
    return uri == root_uri or uri.startswith(root_uri.rstrip("/") + "/")
