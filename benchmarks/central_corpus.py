"""A large corpus of distinct real passages for ``central_search.py --vectors DIR`` (issue 14),
embedded with the bundled all-MiniLM-L6-v2 in resumable shards.

Sources, all offline on a Debian box with lokal's venv: docstrings and ``#`` comment blocks of
every ``.py`` under the venv's site-packages and the standard library; ``pydoc_data.topics``
paragraphs; Debian package descriptions (the apt lists, via ``apt-cache dumpavail``); man pages
(``/usr/share/man``, roff requests stripped); the HTML pages of the Debian documentation
packages of ``DOC_PACKAGES`` (the Linux kernel's, Python's, the JDK's API, Qt's, PostgreSQL's,
Rust's, Erlang's, Boost's, the Debian Administrator's Handbook, and the manuals of Django,
SciPy, SymPy, pandas, scikit-learn, statsmodels, SQLAlchemy, Astropy, Octave, CMake and Git:
the text of each ``<p>``, ``<li>``, ``<dd>``..., ``<pre>`` and scripts skipped); the kernel's
plain-text Documentation; Perl's POD. Install the packages first (a package not installed is
skipped; 1,249,031 passages with all of them, 573,658 without)::

    apt-get install --no-install-recommends linux-doc-6.1 python3.11-doc perl-doc \
        openjdk-17-doc qtbase5-doc-html postgresql-doc-15 python-django-doc python-scipy-doc \
        python-sympy-doc python-pandas-doc git-doc libboost1.74-doc rust-doc erlang-doc \
        python-sklearn-doc python-statsmodels-doc python-sqlalchemy-doc debian-handbook \
        octave-doc python-astropy-doc python-biopython-doc cmake-doc

and ``apt-get purge`` them again once ``collect`` has written ``texts.json``: they add man pages,
and the tests' man-page set (tests/conftest.py ``manpages``) is a sample of /usr/share/man.

Each paragraph is cut into passages of
10-40 words at sentence ends; passages that look like code (too few plain words) are
dropped; exact duplicates (case- and space-folded) are dropped. The collection is sorted, then
shuffled with a fixed seed, so a prefix of it is a uniform sample of the whole; the first
``--queries`` passages are held out (their first sentence is a query) and never embedded as
documents.

Embedding: sentence-transformers on torch (the bundled model directory, lokal's
``sentence-transformers`` backend's weights), or with ``--backend onnx`` lokal's own ONNX
Runtime backend on the model's int8 pack (about twice as fast; made in the model cache when
missing; cosine to the fp32 vectors in ``info.json``); queries are embedded as the documents
are. Texts of a shard sorted by length for batching,
under ``torch.autocast(bfloat16)`` when ``--bf16`` (AMX/AVX512-BF16 on this CPU; cosine to the
fp32 vectors >= 0.9999 on a sample, measured and stored in ``info.json``). Shard ``i`` (rows
``i * shard .. (i+1) * shard`` of the shuffled collection after the held-out queries) is
written to ``DIR/shard-00000.npy`` when done, so a kill loses at most one shard.

    nice -n 19 .venv/bin/python benchmarks/central_corpus.py collect [--dir /tmp/lokal-central-1m]
    nice -n 19 .venv/bin/python benchmarks/central_corpus.py embed [--rows 1000000] [--bf16]
        [--backend sentence-transformers|onnx]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

SEED = 20261206
MIN_WORDS, MAX_WORDS = 10, 40
SHARD = 20_000
PLAIN = re.compile(r"^[A-Za-z][a-z'-]*[.,;:!?)]*$|^\(?[a-z]+[.,;:)]*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def passages(paragraph: str) -> Iterator[str]:
    """10-40 word passages of one paragraph, cut at sentence ends where possible."""
    words = paragraph.split()
    if len(words) < MIN_WORDS or ">>>" in paragraph:
        return
    chunk: list[str] = []
    for sentence in SENTENCE_END.split(" ".join(words)):
        s = sentence.split()
        if chunk and len(chunk) + len(s) > MAX_WORDS:
            yield from _emit(chunk)
            chunk = []
        chunk += s
        while len(chunk) > MAX_WORDS:
            yield from _emit(chunk[:MAX_WORDS])
            chunk = chunk[MAX_WORDS:]
    yield from _emit(chunk)


def _emit(words: list[str]) -> Iterator[str]:
    if len(words) >= MIN_WORDS and sum(bool(PLAIN.match(w)) for w in words) >= 0.7 * len(words):
        yield " ".join(words)


def python_texts(root: Path) -> Iterator[str]:
    """Docstring paragraphs and ``#`` comment blocks of every ``.py`` under ``root``."""
    for path in sorted(root.rglob("*.py")):
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, OSError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield from re.split(r"\n\s*\n", doc)
        block: list[str] = []
        for line in source.splitlines():
            s = line.strip()
            if s.startswith("#") and not s.startswith("#!"):
                block.append(s.lstrip("#"))
            elif block:
                yield " ".join(block)
                block = []


def debian_texts() -> Iterator[str]:
    """Paragraphs of Debian package descriptions (synopsis + long description)."""
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
    for stanza in out.split("\n\n"):
        m = re.search(r"^Description(?:-en)?: (.*(?:\n .*)*)", stanza, re.M)
        if not m:
            continue
        lines = m.group(1).split("\n")
        paras, cur = [], [lines[0]]
        for line in lines[1:]:
            if line.strip() == ".":
                paras.append(" ".join(cur))
                cur = []
            else:
                cur.append(line.strip())
        paras.append(" ".join(cur))
        yield from paras


def man_texts(root: Path = Path("/usr/share/man")) -> Iterator[str]:
    """Paragraphs of English man pages, roff requests and escapes stripped."""
    for path in sorted(root.glob("man*/*.gz")):
        try:
            raw = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        para: list[str] = []
        for line in raw.splitlines():
            if line.startswith((".", "'")):
                if para and re.match(r"[.'](PP|P|LP|SH|SS|TP|IP|sp|br|HP)\b", line):
                    yield " ".join(para)
                    para = []
                continue
            text = re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&-]|\\s[-+]?\d|\\\*\(..|\\.", " ", line)
            if text.strip():
                para.append(text)
            elif para:
                yield " ".join(para)
                para = []
        if para:
            yield " ".join(para)


RULE = re.compile(r"[=~^\-*#+]{3,}")
POD_MARKUP = re.compile(r"[BCEFILSXZ]<([^<>]*)>")
RST_MARKUP = re.compile(
    r":[a-z:]+:`([^`<]*)(?:<[^`]*>)?`|``([^`]*)``|`([^`<]*)(?:<[^`]*>)?`_*|\*\*?|\\"
)


def doc_texts(root: Path) -> Iterator[str]:
    """Paragraphs of POD and plain-text or reStructuredText documentation under ``root``:
    ``*.pod`` and gzipped text (the kernel's Documentation); headings, directives, indented
    blocks and POD commands dropped, inline markup (``C<...>``, ``:role:`...```) unwrapped."""
    files = [*root.rglob("*.pod"), *root.rglob("*.gz")]
    for path in sorted(files):
        try:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
        except (OSError, EOFError):
            continue
        body = raw.decode("utf-8", errors="replace")
        for para in re.split(r"\n\s*\n", body):
            lines = para.splitlines()
            if not lines or lines[0].startswith((" ", "\t", "..", "=", "-", "*", "#", "|")):
                continue
            if any(RULE.fullmatch(x.strip()) for x in lines):  # a heading's underline
                continue
            text = " ".join(x.strip() for x in lines)
            for _ in range(3):  # nested POD codes: B<C<x>>
                text = POD_MARKUP.sub(r"\1", text)
            yield RST_MARKUP.sub(_unwrap, text)


def _unwrap(m: re.Match[str]) -> str:
    return next((g for g in m.groups() if g is not None), "")


class _Paragraphs(HTMLParser):
    """The text of each block of an HTML page (``<p>``, ``<li>``, ``<dd>``, ``<td>``, headings...:
    ``BLOCKS``); scripts, styles, navigation and ``<pre>`` skipped."""

    BLOCKS = frozenset({"p", "dd", "li", "div", "td", "h1", "h2", "h3", "h4", "dt", "pre", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.cur: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style", "pre", "nav"):
            self.skip += 1
        if tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "pre", "nav"):
            self.skip = max(0, self.skip - 1)
        if tag in self.BLOCKS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.cur.append(data)

    def flush(self) -> None:
        text = " ".join("".join(self.cur).split())
        if text:
            self.out.append(text)
        self.cur = []


def html_texts(path: Path) -> Iterator[str]:
    """Paragraphs of one HTML page (Sphinx's ``_modules`` source pages and indexes skipped)."""
    if "_modules" not in path.parts and path.name not in ("genindex.html", "search.html"):
        parser = _Paragraphs()
        try:
            parser.feed(path.read_text(encoding="utf-8", errors="replace"))
            parser.close()
        except (OSError, AssertionError):
            return
        parser.flush()
        yield from parser.out


# Debian packages of documentation (apt-get install --no-install-recommends them before
# ``collect``); a package that is not installed is skipped, and ``info.json`` records the counts.
DOC_PACKAGES = (
    *("linux-doc-6.1", "python3.11-doc", "openjdk-17-doc", "qtbase5-doc-html"),
    *("postgresql-doc-15", "python-django-doc", "python-scipy-doc", "python-sympy-doc"),
    *("python-pandas-doc", "git-doc", "libboost1.74-doc", "rust-doc", "erlang-doc"),
    *("python-sklearn-doc", "python-statsmodels-doc", "python-sqlalchemy-doc"),
    *("debian-handbook", "octave-doc", "python-astropy-doc", "python-biopython-doc", "cmake-doc"),
)


def doc_package_texts() -> Iterator[str]:
    """Paragraphs of the HTML pages of each installed package of ``DOC_PACKAGES``."""
    for package in DOC_PACKAGES:
        listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        pages = [Path(f) for f in listed.stdout.splitlines() if f.endswith(".html")]
        log(f"  {package}: {len(pages)} HTML pages")
        for page in pages:
            yield from html_texts(page)


def collect(directory: Path) -> tuple[list[str], dict[str, int]]:
    cache = directory / "texts.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        return data["texts"], data["sources"]
    from pydoc_data.topics import topics

    site = Path(sysconfig.get_paths()["purelib"])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = {
        "site-packages docstrings and comments": lambda: python_texts(site),
        "stdlib docstrings and comments": lambda: python_texts(stdlib),
        "pydoc_data.topics": lambda: (p for k in sorted(topics) for p in topics[k].split("\n\n")),
        "Debian package descriptions": debian_texts,
        "man pages": man_texts,
        # The Debian documentation packages of DOC_PACKAGES, where installed (see the docstring)
        "Debian documentation packages (HTML)": doc_package_texts,
        "Linux kernel Documentation (plain text)": lambda: doc_texts(
            Path("/usr/share/doc/linux-doc-6.1/Documentation")
        ),
        "Perl documentation (POD)": lambda: doc_texts(Path("/usr/share/perl/5.36.0/pod")),
    }
    seen: set[str] = set()
    found: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for name, gen in sources.items():
        before = len(found)
        for para in gen():
            for text in passages(para):
                key = " ".join(text.lower().split())
                if key not in seen:
                    seen.add(key)
                    found.append((name, text))
        counts[name] = len(found) - before
        log(f"{name}: {counts[name]} passages ({len(found)} in all)")
    texts = sorted(t for _, t in found)
    rng = np.random.default_rng(SEED)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    directory.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"texts": texts, "sources": counts}))
    return texts, counts


def first_sentence(text: str) -> str:
    sentence = re.split(r"(?<=[.!?:])\s+", text, maxsplit=1)[0]
    words = sentence.split()
    if len(words) < 4:
        words = text.split()[:15]
    return " ".join(words[:30])


def load_model(bf16: bool, backend: str = "sentence-transformers"):  # type: ignore[no-untyped-def]
    """An ``encode(texts) -> unit vectors`` of the bundled model on ``backend``:
    ``sentence-transformers`` (torch, bf16 autocast when ``bf16``) or ``onnx`` (lokal's ONNX
    Runtime backend on the model's int8 pack, made in the model cache if missing)."""
    if backend == "onnx":
        from lokal import Embedder, models, packing_onnx

        pack = packing_onnx.cached_path(models.DEFAULT_MODEL, "int8")
        if not pack.is_dir():
            packing_onnx.pack(models.DEFAULT_MODEL, quantization="int8")
        embedder = Embedder(str(pack))
        return _by_length(lambda batch: embedder.embed_documents(batch).vectors)

    import torch
    from sentence_transformers import SentenceTransformer

    from lokal import models

    model = SentenceTransformer(str(models.bundled_default_dir()), device="cpu")

    def encode(batch: list[str]) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model.encode(batch, batch_size=128)

    return _by_length(encode)


def _by_length(encode):  # type: ignore[no-untyped-def]
    """``encode`` run on the texts sorted by length (less padding per batch), its rows put
    back in the texts' order as float32 unit vectors."""

    def run(texts: list[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = encode([texts[i] for i in order])
        vectors = np.empty(out.shape, dtype=np.float32)
        vectors[order] = out
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return run


def embed(a: argparse.Namespace) -> None:
    texts, sources = collect(a.dir)
    queries, docs = texts[: a.queries], texts[a.queries : a.queries + a.rows]
    log(f"{len(texts)} passages; embedding up to {len(docs)} documents in shards of {SHARD}")
    encode = load_model(a.bf16, a.backend)
    info_file = a.dir / "info.json"
    if not info_file.exists():
        sample = docs[:1000]
        check = encode(sample)
        fp32 = load_model(False)(sample)
        cos = np.sum(check * fp32, axis=1)
        info = {
            "model": f"all-MiniLM-L6-v2 (bundled), {a.backend}"
            + (" (lokal's int8 pack)" if a.backend == "onnx" else " on torch"),
            "backend": a.backend,
            "bf16_autocast": a.bf16 and a.backend != "onnx",
            "cosine_to_fp32_min": float(cos.min()),
            "cosine_to_fp32_mean": float(cos.mean()),
            "sources": sources,
            "passages": len(texts),
            "queries": a.queries,
            "shard": SHARD,
            "embed_seconds": {},
        }
        # Queries embedded as the documents were (same backend), as a reader of the index would.
        np.save(a.dir / "queries.npy", encode([first_sentence(q) for q in queries]))
        info_file.write_text(json.dumps(info, indent=2))
    info = json.loads(info_file.read_text())
    for i, start in enumerate(range(0, len(docs), SHARD)):
        path = a.dir / f"shard-{i:05d}.npy"
        if path.exists():
            continue
        t0 = time.perf_counter()
        vectors = encode(docs[start : start + SHARD])
        np.save(path.with_suffix(".tmp.npy"), vectors)
        path.with_suffix(".tmp.npy").rename(path)
        dt = time.perf_counter() - t0
        info["embed_seconds"][str(i)] = dt
        info_file.write_text(json.dumps(info, indent=2))
        log(f"shard {i}: {len(vectors)} rows in {dt:.0f} s ({len(vectors) / dt:.0f}/s)")


def load_vectors(directory: Path, rows: int | None = None) -> dict[str, object]:
    """The finished shards (in order, up to ``rows``), their texts, the query vectors."""
    texts, _ = collect(directory)
    info = json.loads((directory / "info.json").read_text())
    parts = []
    for i in range(len(texts) // SHARD + 1):
        path = directory / f"shard-{i:05d}.npy"
        if not path.exists() or (rows and sum(map(len, parts)) >= rows):
            break
        parts.append(np.load(path))
    docs = np.concatenate(parts)[:rows]
    q = info["queries"]
    return {
        "docs": docs,
        "texts": texts[q : q + len(docs)],
        "queries": np.load(directory / "queries.npy"),
        "info": info,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=["collect", "embed"])
    p.add_argument("--dir", type=Path, default=Path("/tmp/lokal-central-1m"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--bf16", action="store_true", help="torch.autocast(bfloat16) for speed")
    p.add_argument(
        "--backend",
        choices=["sentence-transformers", "onnx"],
        default="sentence-transformers",
        help="onnx: lokal's ONNX Runtime int8 pack (about 2x sentence-transformers on a CPU)",
    )
    a = p.parse_args()
    if a.step == "collect":
        texts, sources = collect(a.dir)
        print(json.dumps({"passages": len(texts), "sources": sources}, indent=2))
    else:
        embed(a)


if __name__ == "__main__":
    main()
