"""Open "an index" by its location: an index file, or a central store's ``postgresql://`` URL.

The one place the CLI, the HTTP server and the framework adapters turn an ``--index`` value
into something to search, with the model it records::

    index, embedder = open_for_search("/var/lib/lokal/index.db")
    index, embedder = open_for_search("postgresql://reader@central/fleet", site="plant-7")
    hits = index.search(embedder.embed_query("how do I reset the pump?"), k=5)

Both kinds answer ``search``, ``text_search``, ``hybrid_search``, ``mmr_search`` and
``get_by_ids`` with the same filter language and the same result types.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lokal.central.connect import is_url, redact
from lokal.identity import ModelIdentity

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex
    from lokal.embedder import Embedder
    from lokal.index import Index


def is_central(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a central store (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and is_url(location)


def describe(location: str | os.PathLike[str]) -> str:
    """``location`` for messages and logs (a URL without its password)."""
    return redact(location) if isinstance(location, str) and is_url(location) else str(location)


def open_index(
    location: str | os.PathLike[str],
    identity: ModelIdentity | None = None,
    *,
    site: str | Sequence[str] | None = None,
    schema: str | None = None,
    **central: Any,
) -> Index | CentralIndex:
    """The index file or central store at ``location``, for reading, checked against
    ``identity`` (another model key: ModelMismatch; another variant: a warning). ``site``,
    ``schema`` and ``central`` (``password_file``, ``password_env``) apply to a central store
    only."""
    if is_central(location):
        from lokal.central.store import DEFAULT_SCHEMA, CentralIndex

        assert isinstance(location, str)
        return CentralIndex.open(
            location, identity, schema=schema or DEFAULT_SCHEMA, site=site, **central
        )
    if site is not None or schema is not None or central:
        given = [n for n, v in (("site", site), ("schema", schema)) if v is not None]
        msg = f"{', '.join([*given, *central])} apply to a central store (postgresql://...) only"
        raise ValueError(msg)
    from lokal.index import Index

    return Index.open(location, identity)


def recorded_identity(
    location: str | os.PathLike[str], *, schema: str | None = None, **central: Any
) -> ModelIdentity:
    """The model the index file or central store at ``location`` records."""
    with open_index(location, schema=schema, **central) as index:
        return index.identity


def open_for_search(
    location: str | os.PathLike[str],
    *,
    site: str | Sequence[str] | None = None,
    schema: str | None = None,
    **central: Any,
) -> tuple[Index | CentralIndex, Embedder]:
    """The index or central store at ``location`` and an :class:`~lokal.embedder.Embedder`
    for the model it records (loaded as :func:`lokal.embedder.options_for` finds it; a model
    not on this machine is ModelNotFound saying how to bring it)."""
    from lokal.embedder import Embedder, options_for

    if not is_central(location) and site is None and schema is None and not central:
        from lokal.retrieval import open_recorded

        return open_recorded(location)  # the file opened once, the model resolved once
    identity = recorded_identity(location, schema=schema, **central)
    embedder = Embedder(**options_for(identity, describe(location)))
    return open_index(location, embedder.identity, site=site, schema=schema, **central), embedder
