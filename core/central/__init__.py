"""The central store: every edge box's index searchable as one, on PostgreSQL with pgvector.

One PostgreSQL schema is one collection, made by one model (its key recorded in
``<schema>.meta``); each row carries the ``site`` it came from and the document ``path`` on
that box. :class:`lokal.central.store.CentralIndex` searches it the way
:class:`lokal.index.Index` searches a file: the same filter language (plus ``site`` and
``path``), ``search``, ``text_search``, ``hybrid_search``, ``mmr_search``, ``get_by_ids``.

Needs the ``central`` extra (``pip install 'lokal[central]'``); ``import lokal.central`` alone
imports neither psycopg nor pgvector.
"""

from __future__ import annotations

#: True for index locations that name a central store rather than an index file.
CENTRAL_PREFIXES = ("postgresql://", "postgres://")


def is_central(location: object) -> bool:
    """Whether ``location`` (an ``--index`` value) names a PostgreSQL central store."""
    return isinstance(location, str) and location.startswith(CENTRAL_PREFIXES)
