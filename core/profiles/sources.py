"""Reading a model's config files and names: what both profile kinds start from.

No torch and no weights: JSON config files, Hugging Face cache paths, GGUF metadata keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lokal.errors import ProfileError

#: Keys lokal writes into the GGUFs it packs.
LOKAL_KEY_PREFIX = "lokal."
#: Where the family tables' sources live.
HF = "https://huggingface.co/"


def read_json(path: Path) -> Any:
    """A JSON config file's content (None when the file does not exist)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ProfileError(msg) from exc


def read_object(path: Path) -> dict[str, Any]:
    """A JSON config file that holds an object ({} when missing or not an object)."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def name_candidates(root: Path, hf_config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Names a model directory goes by, each with where it comes from: a Hugging Face cache
    path (``models--org--name/snapshots/<hash>``), the directory's name, ``_name_or_path``."""
    candidates = []
    for part in (root, *list(root.parents)[:3]):
        if part.name.startswith("models--"):
            hub_id = part.name[len("models--") :].replace("--", "/")
            candidates.append((hub_id, "the Hugging Face cache path"))
    candidates.append((root.name, "the directory's name"))
    if hf_config.get("_name_or_path"):
        candidates.append(
            (str(hf_config["_name_or_path"]).rstrip("/"), "_name_or_path in config.json")
        )
    return tuple(candidates)


def guess_name(root: Path, hf_config: Mapping[str, Any], known: Callable[[str], bool]) -> str:
    """The model's name from its directory (:func:`name_candidates`): the first candidate
    ``known`` accepts (a family table's lookup), else the first."""
    candidates = [name for name, _where in name_candidates(root, hf_config)]
    for candidate in candidates:
        if known(candidate):
            return candidate
    return candidates[0]


def gguf_name(metadata: Mapping[str, Any], fallback_name: str) -> str:
    """The model name a GGUF's metadata gives (lokal's record, then the standard keys)."""
    return str(
        metadata.get(LOKAL_KEY_PREFIX + "name")
        or metadata.get("general.basename")
        or metadata.get("general.name")
        or fallback_name
    )
