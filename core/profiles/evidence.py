"""Which model is this? Identification by what a directory or a GGUF holds, not its name.

Offline boxes rarely keep hub names: a copy of all-MiniLM-L6-v2 in ``/opt/models/mymodel`` must
still be known. Evidence is weighed in this order, and the first piece that names a model the
family table knows decides (:class:`Identification` says which):

1. the sentence-transformers config (``prompts``, ``default_prompt_name``, pooling): these give
   the prefixes and pooling directly (read by :mod:`lokal.profiles.embedding`); they name no
   model, but a model named below whose family disagrees with them is a conflict;
2. the model card (``README.md``, :mod:`lokal.profiles.cards`): its ``model-index`` name (the
   model's own name), ``base_model``, the ids its usage examples load, its title;
3. the weights' sha256 against the known checkpoints (:mod:`lokal.profiles.checkpoints`),
   computed only when 1-2 named nothing known and the weights are one file of a known
   checkpoint's size, and remembered by path, size and times;
4. the name: the one the caller asked by, a Hugging Face cache path, the directory's name,
   ``_name_or_path`` in ``config.json``.

For a GGUF made elsewhere (or packed by an older lokal, with only ``lokal.name``):
``general.base_model.*`` and ``general.source.*`` (the card's
``base_model``), then ``general.name`` / ``general.basename``, then the file name. A GGUF lokal
packed carries its identification in ``lokal.evidence``.

Two pieces that name different families are a conflict: reported (``conflicts``, ``lokal
models info``, a warning when the model is used), never settled silently.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.errors import LokalError
from lokal.profiles import cards, checkpoints
from lokal.profiles.sources import LOKAL_KEY_PREFIX

log = logging.getLogger(__name__)

#: The family a model id belongs to in a family table (None: the table does not know it).
FamilyOf = Callable[[str], "str | None"]

CONFIG, CARD, WEIGHTS, NAME, GGUF = "config", "card", "weights", "name", "gguf"
#: The GGUF key lokal's packer writes an :class:`Identification` under.
EVIDENCE_KEY = LOKAL_KEY_PREFIX + "evidence"


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: where it was found, and the model (and family) it names."""

    kind: str
    #: Where exactly: "model-index name in README.md".
    where: str
    model_id: str | None = None
    #: The family the table gives ``model_id`` (None: unknown to the table).
    family: str | None = None

    def describe(self) -> str:
        if not self.model_id:
            return self.where
        named = f" names {self.model_id}" if self.model_id else ""
        family = f" (family {self.family})" if self.family else " (no family known)"
        return f"{self.where}{named}{family if self.model_id else ''}"


@dataclass(frozen=True)
class Identification:
    """What the evidence says a model is."""

    #: The model id the profile comes from: the deciding evidence's, else the name.
    name: str
    #: The evidence that decided; None when nothing named a known model.
    decided_by: Evidence | None = None
    evidence: tuple[Evidence, ...] = ()
    #: Evidence that disagrees, one sentence each.
    conflicts: tuple[str, ...] = ()
    #: Query instructions or prefixes the card or config asks for, exactly as written.
    asked_prefixes: tuple[str, ...] = ()
    #: Where the asked prefixes were found ("README.md", "prompts in ...").
    asked_where: str = ""
    #: What could not be used, and why (no weights to hash, a front matter that is not YAML).
    notes: tuple[str, ...] = ()

    @property
    def family(self) -> str | None:
        return self.decided_by.family if self.decided_by else None

    def describe(self) -> str:
        if self.decided_by is None:
            return f"{self.name}: no evidence names a model lokal knows"
        return f"{self.decided_by.model_id}, by {self.decided_by.kind}: {self.decided_by.where}"

    def with_conflict(self, conflict: str) -> Identification:
        if conflict in self.conflicts:
            return self
        return dataclasses.replace(self, conflicts=(*self.conflicts, conflict))

    def with_asked(self, asked: tuple[str, ...], where: str) -> Identification:
        if not asked:
            return self
        merged = tuple(dict.fromkeys((*self.asked_prefixes, *asked)))
        place = ", ".join(p for p in (self.asked_where, where) if p)
        return dataclasses.replace(self, asked_prefixes=merged, asked_where=place)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identification:
        def evidence(item: Any) -> Evidence | None:
            if not isinstance(item, Mapping):
                return None
            names = {f.name for f in dataclasses.fields(Evidence)}
            return Evidence(**{k: v for k, v in item.items() if k in names})

        items = [evidence(e) for e in data.get("evidence") or ()]
        return cls(
            name=str(data.get("name", "")),
            decided_by=evidence(data.get("decided_by")),
            evidence=tuple(e for e in items if e is not None),
            conflicts=tuple(str(c) for c in data.get("conflicts") or ()),
            asked_prefixes=tuple(str(a) for a in data.get("asked_prefixes") or ()),
            asked_where=str(data.get("asked_where") or ""),
            notes=tuple(str(n) for n in data.get("notes") or ()),
        )


def identify_dir(
    root: Path,
    family_of: FamilyOf,
    *,
    name: str | None = None,
    names: tuple[tuple[str, str], ...] = (),
    config: tuple[Evidence, ...] = (),
) -> Identification:
    """Identify the model in a directory (see the module's order).

    ``name``: the name the caller asked by (a hub id); ``names``: other name candidates with
    where they come from (:func:`lokal.profiles.sources.name_candidates`), weakest last;
    ``config``: what the sentence-transformers config said (recorded first, names no model)."""
    found: list[Evidence] = list(config)
    notes: list[str] = []
    card = cards.read_card(root)
    if card is not None:
        notes += card.problems
        found += _card_evidence(card, family_of)
    if not any(e.family for e in found):
        found += _weights_evidence(root, family_of, notes)
    for candidate, where in _name_candidates(name, names):
        found.append(Evidence(NAME, where, candidate, family_of(candidate)))
    fallback = name or (names[0][0] if names else root.name)
    ident = decide(found, fallback, tuple(notes))
    if name and ident.family and family_of(name) == ident.family:
        # the hub id it was asked by agrees with the card: keep the fuller id
        ident = dataclasses.replace(ident, name=name)
    if card is not None:
        ident = ident.with_asked(card.asked_prefixes, card.path.name)
    return ident


def identify_gguf(
    metadata: Mapping[str, Any], fallback: str, family_of: FamilyOf
) -> Identification:
    """Identify a GGUF: lokal's own record when lokal packed it, else its standard metadata."""
    packed = metadata.get(EVIDENCE_KEY)
    if isinstance(packed, str):
        try:
            stored = json.loads(packed)
        except ValueError:
            stored = None
        if isinstance(stored, dict):
            ident = Identification.from_dict(stored)
            note = f"read from {EVIDENCE_KEY} in the GGUF (identified when it was packed)"
            return dataclasses.replace(ident, notes=(*ident.notes, note))
    found: list[Evidence] = []
    own = metadata.get(LOKAL_KEY_PREFIX + "name")
    if isinstance(own, str) and own:
        found.append(Evidence(GGUF, f"{LOKAL_KEY_PREFIX}name", own))
    for i in range(8):
        for key in ("repo_url", "name"):
            value = metadata.get(f"general.base_model.{i}.{key}")
            if isinstance(value, str) and value:
                model_id = value.removeprefix("https://huggingface.co/").strip("/")
                found.append(Evidence(GGUF, f"general.base_model.{i}.{key}", model_id))
    for key in ("general.source.huggingface.repository", "general.source.url"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            found.append(Evidence(GGUF, key, value.removeprefix("https://huggingface.co/")))
    for key in ("general.name", "general.basename"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            found.append(Evidence(GGUF, key, value))
    found.append(Evidence(NAME, "the file's name", fallback))
    found = [dataclasses.replace(e, family=family_of(e.model_id or "")) for e in found]
    return decide(found, fallback, ())


def decide(found: list[Evidence], fallback: str, notes: tuple[str, ...]) -> Identification:
    """The first evidence naming a known family decides; others naming another family conflict."""
    decided = next((e for e in found if e.family), None)
    conflicts = tuple(
        dict.fromkeys(
            f"{e.where} names {e.model_id} (family {e.family}), but {decided.where} names "
            f"{decided.model_id} (family {decided.family})"
            for e in found
            if decided is not None and e.family and e.family != decided.family
        )
    )
    name = decided.model_id if decided and decided.model_id else fallback
    return Identification(name, decided, tuple(found), conflicts, notes=notes)


def _card_evidence(card: cards.ModelCard, family_of: FamilyOf) -> list[Evidence]:
    file = card.path.name
    pieces = [
        *((n, f"model-index name in {file}") for n in card.index_names),
        *((b, f"base_model in {file}'s front matter") for b in card.base_models),
        *((u, f"a usage example in {file}") for u in card.usage_ids),
    ]
    if card.title:
        pieces.append((card.title, f"the title of {file}"))
    return [Evidence(CARD, where, model_id, family_of(model_id)) for model_id, where in pieces]


def _weights_evidence(root: Path, family_of: FamilyOf, notes: list[str]) -> list[Evidence]:
    """The known checkpoint the weights are, by sha256. Every known checkpoint is one
    ``model.safetensors`` of a known size: weights of another shape are not hashed at all."""
    from lokal import models

    weights = sorted(root.glob("*.safetensors"))
    try:
        size = weights[0].stat().st_size if len(weights) == 1 else None
    except OSError as exc:
        notes.append(f"weights not hashed: {exc}")
        return []
    if size is None or size not in checkpoints.sizes():
        shape = f"{len(weights)} .safetensors files" if size is None else f"{size:,} bytes"
        notes.append(f"weights not hashed: {shape}, no known checkpoint's size")
        return []
    try:
        digest = models.file_sha256(weights[0])
    except (LokalError, OSError) as exc:
        notes.append(f"weights not hashed: {exc}")
        return []
    known = checkpoints.by_sha256(digest)
    if known is None:
        notes.append(f"weights sha256 {digest} is no known checkpoint's")
        return []
    where = f"the weights' sha256 ({digest[:16]}...)"
    return [Evidence(WEIGHTS, where, known.hub_id, family_of(known.hub_id))]


def _name_candidates(name: str | None, names: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    out = [(name, "the name it was asked by")] if name else []
    out += [(n, where) for n, where in names if n and n != name]
    return out
