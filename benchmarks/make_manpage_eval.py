"""Write an evaluation set in BEIR layout from the manual pages on this machine.

Each page's one-line description from its NAME section ("list directory contents") is a
question; the page itself, without its NAME section, is the answer (title: the names the page
documents, text: the rest of the page as plain text). Pages with the same description answer
the same question together. Nothing is shipped: the set is made from whatever pages the
machine has, so numbers from it describe this machine's pages.

    python benchmarks/make_manpage_eval.py OUT [--pages 1000] [--seed 0]
        [--man-dir /usr/share/man/man1] [--exclude 'gcloud*'] [--max-chars 0]

Then: lokal eval OUT. Pages are read with gzip and a small roff-to-text cleanup (man(7) and
mdoc(7) macros, font and character escapes), no groff needed. Redirects (``.so``), links to
other pages and pages without a parsable NAME line are skipped.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import random
import re
import sys
from pathlib import Path

from _beir import write_beir

# roff character names -> text (the common ones; others are dropped)
CHARS = {
    "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
    "bu": "•", "co": "©", "rg": "®", "tm": "™", "mi": "-", "hy": "-", "ti": "~", "ha": "^",
    "rs": "\\", "ga": "`", "pl": "+", "mu": "×", ">=": "≥", "<=": "≤", "->": "→", "<-": "←",
    "ul": "_", "sl": "/", "de": "°", "Fo": "«", "Fc": "»", "dg": "†", "sc": "§", "ba": "|",
    "at": "@", "sh": "#", "Do": "$", "eu": "€", "ss": "ß", "lB": "[", "rB": "]", "lC": "{",
    "rC": "}", "la": "<", "ra": ">", "eq": "=", "or": "|", "pc": "·",
}  # fmt: skip
STRINGS = {"lq": '"', "rq": '"', "R": "®", "Tm": "™", "aq": "'", "Aq": "'"}
# macros whose arguments are text (man(7) fonts, headings, tagged paragraphs; mdoc inline)
_DROP_REQUESTS = {
    "TH", "PD", "UC", "Dd", "Dt", "Os", "if", "ie", "el", "nr", "ds", "so", "tr", "ft", "ps",
    "vs", "ne", "sp", "br", "in", "ti", "ad", "na", "nh", "hy", "fi", "nf", "ll", "ta", "bp",
    "TS", "TE", "T&", "Bl", "El", "Bd", "Ed", "Bk", "Ek", "RS", "RE", "PP", "LP", "P", "TP",
    "HP", "EX", "EE", "UE", "ME", "YS", "Pp", "Lp", "Sm", "rm", "rr", "cc", "ev", "mk", "rt",
    "ns", "rs", "ss", "cs", "ch", "wh", "it", "lf", "hw", "pl", "po", "fam", "nop", "ce",
    "ul", "cu", "lt", "pc", "hc", "ec", "eo", "em", "pm", "tm", "ab", "ex", "do", "ig", "IX",
}  # fmt: skip
_MDOC_CALLABLE = re.compile(
    r"\b(?:Ac|Ao|Ap|Aq|Ar|Bc|Bo|Bq|Brc|Bro|Brq|Cm|Dc|Do|Dq|Dv|Ec|Em|Eo|Er|Ev|Fa|Fc|Fl|Fn|Ft|"
    r"Ic|Li|Nm|No|Ns|Oc|Oo|Op|Pa|Pc|Pf|Po|Pq|Qc|Ql|Qo|Qq|Sc|So|Sq|Sy|Tn|Va|Xc|Xo|Xr)\b\s*"
)
_ARG = re.compile(r'"((?:[^"]|"")*)"?|(\S+)')
_ESCAPE = re.compile(
    r"\\(?:f(?:\[[^\]]*\]|\(..|.)"  # fonts
    r"|s[+-]?(?:\(\d\d|\[\d+\]|\d)"  # sizes
    r"|[nk*g](?:\(..|\[[^\]]*\]|.)"  # registers, strings (handled before), marks
    r"|[hvwoXlLbDSxZRN]'[^']*'"  # motions and the like
    r"|\((..)"  # \(xx character
    r"|\[([^\]]*)\]"  # \[name] character
    r"|(.))"  # one-character escapes
)
_ONE = {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`", "\\": "\\", ".": "."}


def _strings(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return STRINGS.get(m.group(1) or m.group(2) or m.group(3) or "", "")

    return re.sub(r"\\\*(?:\((..)|\[([^\]]*)\]|(.))", sub, text)


def inline(text: str) -> str:
    """Roff escapes to plain text."""
    text = _strings(text)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name is not None:
            return CHARS.get(name, "")
        return _ONE.get(m.group(3) or "", "")

    return _ESCAPE.sub(sub, text)


def _args(rest: str) -> list[str]:
    found = _ARG.finditer(rest)
    return [
        (m.group(1) if m.group(1) is not None else m.group(2)).replace('""', '"') for m in found
    ]


def roff_lines(source: str) -> list[tuple[str, str]]:
    """(macro, text) pairs: macro is "" for running text, else the request's name."""
    out: list[tuple[str, str]] = []
    skip_until: str | None = None
    for raw in source.splitlines():
        if skip_until is not None:
            end = raw.strip()
            if end.startswith(skip_until) or (skip_until == ".." and re.fullmatch(r"\.\s*\.", end)):
                skip_until = None
            continue
        line = re.sub(r'(?<!\\)\\".*', "", raw)  # comments
        line = re.sub(r"\\[{}]", "", line).rstrip()  # conditional-block braces
        if line.endswith("\\") and not line.endswith("\\\\"):
            line = line[:-1]  # a continued line
        if raw.lstrip().startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        if line[:1] in (".", "'"):
            body = line[1:].strip()
            m = re.match(r"[A-Za-z0-9&]*", body)
            macro, rest = (m.group(0) if m else ""), body[m.end() if m else 0 :].strip()
            if macro in ("de", "de1", "am", "ig"):
                skip_until = ".." if macro != "ig" or not rest.strip() else "." + rest.strip()
                continue
            if not macro or macro in _DROP_REQUESTS:
                if macro in ("TP", "PP", "LP", "P", "Pp", "sp", "br", "HP"):
                    out.append(("P", ""))
                continue
            out.append((macro, rest))
        else:
            out.append(("", re.sub(r"(?<!\w)T[{}](?!\w)", " ", line)))  # tbl cell marks
    return out


def render(macro: str, rest: str) -> str:
    if macro in ("BR", "RB", "IR", "RI", "BI", "IB"):
        return inline("".join(_args(rest)))
    if macro in ("It", "Fl", "Op", "Ar", "Pa", "Nm", "Xr", "Cm", "Dl", "D1", "Ql", "Em", "Sy"):
        words = _MDOC_CALLABLE.sub(lambda m: "-" if m.group(0).startswith("Fl") else "", rest)
        words = re.sub(r"-\s+(?=\S)", "-", words) if macro != "Fl" else "-" + words.strip()
        return inline(" ".join(_args(words)))
    return inline(" ".join(_args(rest)))


HEADINGS = {"SH", "SS", "Sh", "Ss"}


def parse_page(source: str) -> tuple[str, str, str] | None:
    """(names, description, text) of a man(7) or mdoc(7) page, or None when it has no
    NAME line of the form ``names \\- description`` (or ``.Nm``/``.Nd``)."""
    lines = roff_lines(source)
    sections: list[tuple[str, list[str]]] = [("", [])]
    mdoc_names: list[str] = []
    mdoc_desc = ""
    for macro, rest in lines:
        if macro in HEADINGS:
            sections.append((render(macro, rest).strip().upper(), []))
            continue
        if sections[-1][0] == "NAME" and macro == "Nm":
            mdoc_names.append(render(macro, rest).strip(" ,"))
            continue
        if macro == "Nd":
            mdoc_desc = render(macro, rest)
            continue
        if macro == "P":
            sections[-1][1].append("")
        elif macro == "":
            sections[-1][1].append(rest)  # kept raw: the NAME line needs its \- mark
        else:
            sections[-1][1].append(render(macro, rest))
    name_raw = " ".join(" ".join(body) for title, body in sections if title == "NAME").strip()
    if mdoc_desc:
        names, desc = ", ".join(n for n in mdoc_names if n), mdoc_desc
    else:
        m = re.search(r"\s+\\-\s*|\s+-{1,2}\s+", name_raw) or re.search(r"\\-", name_raw)
        if not m:
            return None
        names, desc = inline(name_raw[: m.start()]), inline(name_raw[m.end() :])
    body = []
    for title, block in sections:
        if title in ("NAME", ""):  # "": set-up before the first heading
            continue
        if title:
            body.append(title.capitalize())
        body.append(" ".join(inline(x) if x else "\n" for x in block))
    text = re.sub(r"[ \t]+", " ", "\n".join(body))
    text = re.sub(r"\s*\n\s*", "\n", text).strip()
    desc = " ".join(desc.split())
    names = " ".join(names.split())
    if len(desc.split()) < 2 or len(text.split()) < 20:
        return None
    return names, desc, text


def read_page(path: Path) -> str | None:
    """A page's roff source, or None for a redirect (``.so``) or an unreadable file."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    text = data.decode("utf-8", "replace")
    if re.match(r"\s*\.so\s", text) and len(text.strip().splitlines()) <= 2:
        return None
    return text


def page_id(path: Path) -> str:
    return path.name.removesuffix(".gz")


def candidates(man_dir: Path, exclude: list[str]) -> list[Path]:
    pages = []
    for p in sorted(man_dir.iterdir()):
        if p.is_symlink() or not p.is_file():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in exclude):
            continue
        pages.append(p)
    return pages


def build(
    out: Path, man_dir: Path, n_pages: int, seed: int, exclude: list[str], max_chars: int
) -> dict[str, int]:
    pages = candidates(man_dir, exclude)
    random.Random(seed).shuffle(pages)
    docs: list[dict[str, str]] = []
    for path in pages:
        if len(docs) >= n_pages:
            break
        source = read_page(path)
        parsed = parse_page(source) if source else None
        if parsed is None:
            continue
        names, desc, text = parsed
        if max_chars:
            text = text[:max_chars]
        docs.append({"_id": page_id(path), "title": names, "text": text, "desc": desc})
    if not docs:
        msg = f"no usable manual pages in {man_dir}"
        raise SystemExit(msg)
    docs.sort(key=lambda d: d["_id"])
    queries = write_beir(out, docs)
    return {"pages": len(docs), "queries": queries, "shared": len(docs) - queries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write (BEIR layout)")
    ap.add_argument("--pages", type=int, default=1000, help="pages in the corpus (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="which pages: a seeded shuffle")
    ap.add_argument("--man-dir", type=Path, default=Path("/usr/share/man/man1"))
    ap.add_argument(
        "--exclude", action="append", default=[], help="leave out pages matching (glob)"
    )
    ap.add_argument("--max-chars", type=int, default=0, help="cut page texts (0: whole pages)")
    args = ap.parse_args(argv)
    if args.pages < 1:
        ap.error("--pages must be at least 1")
    if not args.man_dir.is_dir():
        ap.error(f"no such directory: {args.man_dir}")
    counts = build(args.out, args.man_dir, args.pages, args.seed, args.exclude, args.max_chars)
    print(
        f"{args.out}: {counts['pages']} pages, {counts['queries']} questions "
        f"({counts['shared']} pages share a description with another)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
