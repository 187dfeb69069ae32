"""Evaluation sets: questions, the documents that answer them, and the texts to search.

Three ways to give one, all read into an :class:`EvalSet`:

- a **BEIR directory** (:func:`load_beir`): ``corpus.jsonl`` (``_id``, ``title``, ``text``),
  ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``,
  ``score``; a header line is optional). Documents are embedded as ``title + " " + text``, as
  MTEB does. Judgments above 0 are relevant; larger grades count more in nDCG.
- a **questions file** (:func:`load_questions`), JSONL (``{"question": ..., "expected": ...}``,
  ``expected`` an id or a list of ids) or CSV (columns ``question`` and ``expected``, several ids
  separated by ``|``), against a corpus (a BEIR ``corpus.jsonl``) or against
- a **lokal index** (:func:`index_corpus`): the chunks it holds are the texts to search and the
  expected answers are source paths; a document counts as retrieved at the rank of its best chunk.

Every problem is an :class:`~lokal.errors.EvalDataError` naming the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokal.errors import EvalDataError


@dataclass(frozen=True)
class Unit:
    """One text to search: a whole document (BEIR) or one chunk of it (an index)."""

    id: str
    text: str
    document: str


@dataclass
class EvalSet:
    """Questions with their judged documents, and the texts to search."""

    name: str
    units: list[Unit]
    #: Query id -> text, for the queries with at least one relevant document.
    queries: dict[str, str]
    #: Query id -> {document id: grade}.
    qrels: dict[str, dict[str, int]]
    #: The lokal index the units came from, if any.
    index_path: Path | None = None
    #: Queries left out because no document was judged relevant for them.
    unjudged: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def documents(self) -> int:
        return len({u.document for u in self.units})

    def fingerprint(self) -> str:
        """sha256 of the units (ids, documents, texts): the corpus part of a cache key."""
        h = hashlib.sha256()
        for u in self.units:
            for part in (u.id, u.document, u.text):
                h.update(part.encode("utf-8", "surrogatepass"))
                h.update(b"\x00")
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queries": len(self.queries),
            "documents": self.documents,
            "texts": len(self.units),
            "judgments": sum(len(r) for r in self.qrels.values()),
            "unjudged_queries": self.unjudged,
            "index": str(self.index_path) if self.index_path else None,
        }


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = "no such file"
        raise EvalDataError(msg, path) from exc
    except OSError as exc:
        msg = f"cannot read it: {exc.strerror}"
        raise EvalDataError(msg, path) from exc
    with fh:
        try:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    msg = f"not valid JSON ({exc})"
                    raise EvalDataError(msg, path, n) from exc
                if not isinstance(obj, dict):
                    msg = f"expected a JSON object, got {type(obj).__name__}"
                    raise EvalDataError(msg, path, n)
                yield n, obj
        except UnicodeDecodeError as exc:
            msg = f"not UTF-8 text ({exc.reason})"
            raise EvalDataError(msg, path) from exc


def _field(obj: dict[str, Any], names: tuple[str, ...], path: Path, n: int) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    wanted = " or ".join(repr(x) for x in names)
    msg = f"no {wanted} field"
    raise EvalDataError(msg, path, n)


def _id(value: Any, path: Path, n: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        msg = f"an id must be a non-empty string or integer, got {value!r}"
        raise EvalDataError(msg, path, n)
    return str(value)


def _text(value: Any, what: str, path: Path, n: int) -> str:
    if not isinstance(value, str):
        msg = f"{what} must be a string, got {type(value).__name__}"
        raise EvalDataError(msg, path, n)
    return value


def read_corpus(path: Path) -> list[Unit]:
    """A BEIR ``corpus.jsonl``: one document per line, embedded as ``title + " " + text``."""
    units: list[Unit] = []
    seen: dict[str, int] = {}
    for n, obj in _jsonl(path):
        doc_id = _id(_field(obj, ("_id", "id"), path, n), path, n)
        text = _text(_field(obj, ("text",), path, n), "'text'", path, n)
        title = _text(obj.get("title") or "", "'title'", path, n)
        if doc_id in seen:
            msg = f"document id {doc_id!r} also on line {seen[doc_id]}"
            raise EvalDataError(msg, path, n)
        seen[doc_id] = n
        full = f"{title} {text}".strip()
        if not full:
            msg = f"document {doc_id!r} has no text and no title"
            raise EvalDataError(msg, path, n)
        units.append(Unit(doc_id, full, doc_id))
    if not units:
        msg = "no documents (the corpus is empty)"
        raise EvalDataError(msg, path)
    return units


def read_queries(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """A BEIR ``queries.jsonl``: query id -> text, and query id -> line number."""
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for n, obj in _jsonl(path):
        qid = _id(_field(obj, ("_id", "id"), path, n), path, n)
        text = _text(_field(obj, ("text",), path, n), "'text'", path, n).strip()
        if qid in queries:
            msg = f"query id {qid!r} also on line {lines[qid]}"
            raise EvalDataError(msg, path, n)
        if not text:
            msg = f"query {qid!r} has no text"
            raise EvalDataError(msg, path, n)
        queries[qid], lines[qid] = text, n
    if not queries:
        msg = "no queries (the file is empty)"
        raise EvalDataError(msg, path)
    return queries, lines


def read_qrels(
    path: Path, queries: dict[str, str], documents: set[str]
) -> dict[str, dict[str, int]]:
    """A qrels file: ``query-id<TAB>corpus-id<TAB>score`` (BEIR, header optional) or TREC's
    ``query-id 0 corpus-id score``. Unknown query or document ids are errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        msg = "no such file"
        raise EvalDataError(msg, path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read it: {exc}"
        raise EvalDataError(msg, path) from exc
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        header, first = first, False
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) == 4:  # TREC: qid iteration docid grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            msg = (
                f"expected 3 tab-separated fields (query-id, corpus-id, score), got "
                f"{len(parts)}: {line[:80]!r}"
            )
            raise EvalDataError(msg, path, n)
        qid, doc, grade_text = parts
        try:
            grade = int(grade_text)
        except ValueError as exc:
            if header:
                continue  # query-id, corpus-id, score
            msg = f"the score must be an integer, got {grade_text!r}"
            raise EvalDataError(msg, path, n) from exc
        if qid not in queries:
            msg = f"query id {qid!r} is not in queries.jsonl"
            raise EvalDataError(msg, path, n)
        if doc not in documents:
            msg = f"corpus id {doc!r} is not in corpus.jsonl"
            raise EvalDataError(msg, path, n)
        qrels.setdefault(qid, {})[doc] = grade
    if not qrels:
        msg = "no judgments (the file is empty)"
        raise EvalDataError(msg, path)
    return qrels


def _finish(
    name: str,
    units: list[Unit],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    where: Path,
    index_path: Path | None = None,
) -> EvalSet:
    judged = {q: r for q, r in qrels.items() if any(g > 0 for g in r.values())}
    if not judged:
        msg = "no query has a relevant document (every score is 0 or less)"
        raise EvalDataError(msg, where)
    kept = {q: queries[q] for q in queries if q in judged}
    return EvalSet(name, units, kept, judged, index_path, unjudged=len(qrels) - len(judged))


def load_beir(directory: Path, split: str = "test") -> EvalSet:
    """A BEIR directory: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    if not directory.is_dir():
        msg = "no such directory"
        raise EvalDataError(msg, directory)
    for needed in ("corpus.jsonl", "queries.jsonl"):
        if not (directory / needed).is_file():
            msg = (
                f"no {needed} here: a BEIR directory holds corpus.jsonl, queries.jsonl and "
                "qrels/<split>.tsv"
            )
            raise EvalDataError(msg, directory)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
        found = f"splits here: {', '.join(splits)}" if splits else "no qrels/*.tsv at all"
        msg = f"no qrels/{split}.tsv ({found}); choose one with --split"
        raise EvalDataError(msg, directory)
    units = read_corpus(directory / "corpus.jsonl")
    queries, _ = read_queries(directory / "queries.jsonl")
    qrels = read_qrels(qrels_path, queries, {u.id for u in units})
    return _finish(f"{directory.name}/{split}", units, queries, qrels, qrels_path)


def _questions(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, question, expected ids) from a JSONL or CSV questions file."""
    if path.suffix.lower() == ".csv":
        try:
            fh = path.open(encoding="utf-8", newline="")
        except OSError as exc:
            msg = f"cannot read it: {exc.strerror}"
            raise EvalDataError(msg, path) from exc
        with fh:
            reader = csv.DictReader(fh)
            names = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            q_col = names.get("question") or names.get("query")
            e_col = names.get("expected")
            if q_col is None or e_col is None:
                msg = "the first line must name the columns 'question' and 'expected'"
                raise EvalDataError(msg, path, 1)
            try:
                for row in reader:
                    n = reader.line_num
                    question = (row.get(q_col) or "").strip()
                    expected = [e.strip() for e in (row.get(e_col) or "").split("|") if e.strip()]
                    if not question and not expected:
                        continue
                    yield n, question, expected
            except (csv.Error, UnicodeDecodeError) as exc:
                msg = f"not valid CSV ({exc})"
                raise EvalDataError(msg, path, reader.line_num) from exc
        return
    for n, obj in _jsonl(path):
        question = _text(_field(obj, ("question", "query"), path, n), "'question'", path, n)
        value = _field(obj, ("expected",), path, n)
        values = value if isinstance(value, list) else [value]
        yield n, question.strip(), [_id(v, path, n) for v in values]


def load_questions(path: Path, units: list[Unit], *, by_path: bool = False) -> EvalSet:
    """Questions with expected document ids (or, ``by_path``, source paths of an index's
    documents) against ``units``."""
    documents = sorted({u.document for u in units})
    resolve = _path_resolver(documents, path.parent) if by_path else None
    known = set(documents)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, question, expected in _questions(path):
        if not question:
            msg = "the question is empty"
            raise EvalDataError(msg, path, n)
        if not expected:
            msg = "no expected document"
            raise EvalDataError(msg, path, n)
        judged: dict[str, int] = {}
        for e in expected:
            doc = resolve(e) if resolve else (e if e in known else None)
            if doc is None:
                what = "in the index has this path" if by_path else "has this id"
                msg = f"no document {what}: {e!r}"
                raise EvalDataError(msg, path, n)
            judged[doc] = 1
        qid = f"line-{n}"
        queries[qid], qrels[qid] = question, judged
    if not queries:
        msg = "no questions (the file is empty)"
        raise EvalDataError(msg, path)
    return _finish(path.name, units, queries, qrels, path)


def _path_resolver(documents: list[str], base: Path) -> Any:
    """Maps an expected path to an indexed document: the same path (absolute, or relative to
    the questions file or the working directory), else the one document ending with it."""

    known = set(documents)

    def resolve(expected: str) -> str | None:
        if expected in known:
            return expected
        p = Path(expected).expanduser()
        for candidate in (p, base / p, Path.cwd() / p):
            full = os.path.normpath(os.path.abspath(candidate))
            if full in known:
                return full
        tail = "/" + expected.strip("/")
        ends = [d for d in documents if d.endswith(tail)]
        return ends[0] if len(ends) == 1 else None

    return resolve


def index_corpus(index_path: Path) -> list[Unit]:
    """The chunks of a lokal index as units; each belongs to its source document (a chunk
    stored without one stands for itself)."""
    from lokal.index import Index

    with Index.open(index_path) as index:
        records = index.get()
    if not records:
        msg = "the index holds no chunks"
        raise EvalDataError(msg, index_path)
    return [Unit(r.id, r.text, r.document or r.id) for r in records]


def load(
    source: Path,
    *,
    split: str = "test",
    corpus: Path | None = None,
    index: Path | None = None,
) -> EvalSet:
    """Any of the three forms: a BEIR directory, or a questions file with ``corpus`` (a BEIR
    ``corpus.jsonl``) or ``index`` (a lokal index; expected answers are source paths)."""
    if source.is_dir():
        if corpus is not None or index is not None:
            msg = "a BEIR directory brings its own corpus: leave out --corpus and --index"
            raise EvalDataError(msg, source)
        return load_beir(source, split)
    if not source.exists():
        msg = "no such file or directory"
        raise EvalDataError(msg, source)
    if (corpus is None) == (index is None):
        msg = (
            "a questions file needs what to search: --corpus corpus.jsonl (expected ids) or "
            "--index index.db (expected source paths), one of the two"
        )
        raise EvalDataError(msg, source)
    if index is not None:
        if not index.is_file():
            msg = "no such index file"
            raise EvalDataError(msg, index)
        evalset = load_questions(source, index_corpus(index), by_path=True)
        evalset.index_path = index
        return evalset
    assert corpus is not None
    return load_questions(source, read_corpus(corpus))
