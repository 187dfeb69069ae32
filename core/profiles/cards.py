"""A model card (``README.md``): what its front matter and text say about the model.

No torch and no network: the YAML front matter (``base_model``, the ``model-index`` names), the
model ids its usage examples load (``SentenceTransformer('org/name')``, ``FlagModel(...)``,
``from_pretrained(...)``), its first title, and the instructions or prefixes it tells users to
put before their queries (``query_instruction_for_retrieval="..."``, a quoted
``"Represent this sentence ...: "`` or ``"query: "``). :mod:`lokal.profiles.evidence` weighs
these against the other evidence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.errors import ProfileError

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
#: Cards larger than this are read only this far (the front matter of MTEB results is ~60 kB).
_MAX_CARD = 512 * 1024

_HUB_ID = r"[A-Za-z0-9][\w.-]*/[\w.-]*\w"
# Calls in usage examples that load a model by id: SentenceTransformer('org/name'),
# CrossEncoder(...), FlagModel(...), AutoModel.from_pretrained(...), HuggingFace*Embeddings(
# model_name=...), and a plain  model_name = "org/name"  assignment.
_USAGE = re.compile(
    r"(?:\b(?:SentenceTransformer|CrossEncoder|FlagModel|FlagReranker|FlagLLMReranker|BGEM3FlagModel"
    r"|from_pretrained|from_finetuned|HuggingFace\w*Embeddings|INSTRUCTOR)\s*\(\s*"
    r"(?:(?:model_name_or_path|model_name|pretrained_model_name_or_path)\s*=\s*)?"
    r"|\bmodel_name\s*=\s*)"
    rf"[\"']({_HUB_ID})[\"']"
)
_MD_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_TITLE = re.compile(r"<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_Q = "[\"'`]"
# What a card asks users to put before a query: an instruction argument, a quoted instruction
# sentence ending in a colon, or a short quoted "name: " prefix.
_ASKS = (
    re.compile(rf"\b\w*instruction\w*\s*[=:]\s*{_Q}([^\"'`\n]{{2,300}}?){_Q}"),
    re.compile(
        rf"{_Q}((?:Represent|Instruct|Given|Retrieve|Query for)\b[^\"'`\n]{{0,300}}?:[ ]?){_Q}"
    ),
    re.compile(
        rf"{_Q}((?:query|search_query|search_document|passage|document|search_result)"
        rf"[ ]?:[ ]?){_Q}",
        re.IGNORECASE,
    ),
)


@dataclass(frozen=True)
class ModelCard:
    """What one model card says; empty tuples where it says nothing."""

    path: Path
    #: ``model-index`` entry names: the model's own name in cards made by the MTEB tools.
    index_names: tuple[str, ...] = ()
    #: ``base_model`` in the front matter (a fine-tune names what it was trained from).
    base_models: tuple[str, ...] = ()
    #: Hub ids the usage examples load, in order of appearance.
    usage_ids: tuple[str, ...] = ()
    #: The card's first title (a Markdown ``# title`` or an HTML ``<h1>``).
    title: str | None = None
    #: Query instructions or prefixes the card asks for, exactly as quoted.
    asked_prefixes: tuple[str, ...] = ()
    #: What could not be read (a front matter that is not YAML): reported, never dropped.
    problems: tuple[str, ...] = ()


def read_card(root: Path) -> ModelCard | None:
    """The model card in a model directory (None when it has none)."""
    path = root / CARD_FILE
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_CARD)
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise ProfileError(msg) from exc
    return parse_card(raw.decode("utf-8", errors="replace"), path)


def parse_card(text: str, path: Path) -> ModelCard:
    """Parse a model card's text (see :class:`ModelCard`)."""
    meta, body, problems = _front_matter(text, path)
    prose = _FENCE.sub("", body)
    title = _title(prose)
    index_names = tuple(
        str(entry["name"]).strip()
        for entry in _as_list(meta.get("model-index"))
        if isinstance(entry, dict) and entry.get("name")
    )
    return ModelCard(
        path=path,
        index_names=index_names,
        base_models=tuple(str(b).strip() for b in _as_list(meta.get("base_model")) if b),
        usage_ids=_unique(m.group(1) for m in _USAGE.finditer(body)),
        title=title,
        asked_prefixes=_unique(m.group(1) for pattern in _ASKS for m in pattern.finditer(body)),
        problems=problems,
    )


def _front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    """The YAML front matter as a dict, the text after it, and what went wrong reading it."""
    if not text.startswith("---"):
        return {}, text, ()
    end = re.search(r"^---\s*$", text[3:], re.MULTILINE)
    if end is None:
        return {}, text, (f"{path.name}: front matter has no closing '---'",)
    block, body = text[3 : 3 + end.start()], text[3 + end.end() :]
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # MTEB results: tens of kB of YAML
    try:
        meta = yaml.load(block, Loader=loader)  # noqa: S506 (a safe loader, C or Python)
    except yaml.YAMLError as exc:
        log.warning("%s: front matter is not valid YAML (%s); reading the text only", path, exc)
        return {}, body, (f"{path.name}: front matter is not valid YAML",)
    return (meta if isinstance(meta, dict) else {}), body, ()


def _title(prose: str) -> str | None:
    found = [m for m in (_MD_TITLE.search(prose), _HTML_TITLE.search(prose)) if m]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    title = _TAG.sub("", first.group(1)).strip()
    return title or None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))
