"""Write an evaluation set in BEIR layout from the docstrings of Python's standard library.

Each documented function, class or method has a one-line summary ("Return a list of the words
in the string, using sep as the delimiter string.") and a body that explains it. The summary is
the question; the body is the answer (title: the qualified name, ``json.dumps``; text: the
docstring without its summary). Entries with the same summary answer the same question
together. The texts are CPython's own, from the interpreter that runs the script, so numbers
from the set describe that Python's documentation.

    python benchmarks/make_pydoc_eval.py OUT [--entries 1500] [--seed 0] [--min-words 20]

Then: lokal eval OUT. Modules that cannot be imported here are skipped; a signature line that
some builtins put first (``sum(iterable, /, start=0)``) is not taken as the summary.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from _beir import write_beir

#: Widely used standard-library modules, in a fixed order (the set does not depend on what
#: else happens to be importable).
MODULES = (
    "abc argparse array ast asyncio base64 binascii bisect builtins bz2 calendar cmath cmd code "
    "codecs collections colorsys concurrent.futures configparser contextlib copy csv ctypes "
    "dataclasses datetime decimal difflib dis doctest email.message enum filecmp fnmatch "
    "fractions ftplib functools gc getpass gettext glob graphlib gzip hashlib heapq hmac html "
    "html.parser http.client http.cookies http.server imaplib importlib inspect io ipaddress "
    "itertools json keyword locale logging lzma mailbox math mimetypes mmap multiprocessing "
    "netrc numbers operator os os.path pathlib pickle pkgutil platform plistlib poplib pprint "
    "pstats queue quopri random re runpy sched secrets select selectors shlex shutil signal "
    "smtplib socket sqlite3 ssl stat statistics string struct subprocess symtable sysconfig "
    "tarfile tempfile textwrap threading time timeit tokenize tomllib trace traceback "
    "tracemalloc types typing unicodedata unittest urllib.parse urllib.request "
    "urllib.robotparser uuid warnings wave weakref webbrowser xml.dom.minidom "
    "xml.etree.ElementTree xmlrpc.client zipfile zipimport zlib zoneinfo"
).split()

_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.*)?$", re.S)


def _members(module: Any) -> list[tuple[str, Any]]:
    """(qualified name, object) of a module's public functions and classes defined there, and
    of those classes' public methods; sorted by name."""
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        home = getattr(obj, "__module__", None)
        if home != module.__name__ and module.__name__ != "builtins":
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        out.append((f"{module.__name__}.{name}", obj))
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and inspect.isroutine(member):
                    out.append((f"{module.__name__}.{name}.{attr}", member))
    return out


def split_docstring(doc: str) -> tuple[str, str] | None:
    """(summary, body) of a docstring: its first paragraph that is not a signature line, and
    the paragraphs after it; None when there is no body."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    while parts and _SIGNATURE.match(" ".join(parts[0].split())):
        parts = parts[1:]
    if len(parts) < 2:
        return None
    return " ".join(parts[0].split()), "\n".join(parts[1:])


def entries(min_words: int) -> list[dict[str, str]]:
    found = []
    seen: set[int] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for qualname, obj in _members(module):
                doc = inspect.getdoc(obj)
                if not doc or id(obj) in seen:
                    continue
                seen.add(id(obj))
                parsed = split_docstring(doc)
                if parsed is None:
                    continue
                summary, body = parsed
                if len(summary.split()) < 3 or len(body.split()) < min_words:
                    continue
                found.append({"_id": qualname, "title": qualname, "text": body, "desc": summary})
    return found


def build(out: Path, n_entries: int, seed: int, min_words: int) -> dict[str, int]:
    found = entries(min_words)
    if not found:
        msg = "no usable docstrings"
        raise SystemExit(msg)
    random.Random(seed).shuffle(found)
    docs = sorted(found[:n_entries], key=lambda d: d["_id"])
    queries = write_beir(out, docs)
    return {"entries": len(docs), "queries": queries, "shared": len(docs) - queries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write (BEIR layout)")
    ap.add_argument("--entries", type=int, default=1500, help="entries at most (default 1500)")
    ap.add_argument("--seed", type=int, default=0, help="which entries: a seeded shuffle")
    ap.add_argument("--min-words", type=int, default=20, help="shortest docstring body")
    args = ap.parse_args(argv)
    if args.entries < 1:
        ap.error("--entries must be at least 1")
    counts = build(args.out, args.entries, args.seed, args.min_words)
    print(
        f"{args.out}: {counts['entries']} docstrings, {counts['queries']} questions "
        f"({counts['shared']} entries share a summary with another)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
