"""lokal's index: one SQLite file with sqlite-vec that records the model that made its vectors.

>>> from lokal import Embedder
>>> from lokal.index import Index, Chunk
>>> emb = Embedder()
>>> with Index.create("notes.db", emb.identity) as index:
...     texts = ["Reset: hold the red button.", "Filters: every 500 hours."]
...     index.upsert([Chunk(t) for t in texts], emb.embed_documents(texts).vectors)
...     index.search(emb.embed_query("how to reset?"), k=1)[0].text
'Reset: hold the red button.'
"""

from __future__ import annotations

from lokal.index.filters import compile_filter, matches
from lokal.index.handle import IndexHandle
from lokal.index.records import CheckReport, Chunk, DocumentRecord, Hit, Record
from lokal.index.store import Index, open_indexes

__all__ = [
    "CheckReport",
    "Chunk",
    "DocumentRecord",
    "Hit",
    "Index",
    "IndexHandle",
    "Record",
    "compile_filter",
    "matches",
    "open_indexes",
]
