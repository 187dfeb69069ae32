"""Download a published GGUF into lokal's model cache: ``lokal models pull``.

``lokal models pack`` needs llama.cpp's converter and therefore torch; a user who installed
``lokal[gguf]`` to avoid torch gets a model this way instead, on a connected machine:

- a catalog model with a published GGUF (:data:`lokal.catalog.PUBLISHED_GGUF`) by its name,
- any file on the Hugging Face hub (``repo`` + ``file``, optionally a ``revision``),
- or any ``http(s)://`` URL (with the publisher's ``sha256`` when there is one).

A hub file is checked against the hub's own sha256 for it (the LFS object id the hub sends as
``X-Linked-Etag``, read with ``huggingface_hub.get_hf_file_metadata``); the download streams
into a temporary file beside the cache and is renamed into place only once its size and
sha256 are right, so a partial or corrupted download never lands in the cache. The file is
kept byte for byte as published (``sha256sum`` agrees with the hub); its manifest beside it
(``FILE.gguf.json``, the same one ``pack`` writes) records the sha256, the source and the
profile, and ``lokal models verify`` checks it after the file has travelled.

Nothing here runs unless the user asks for a download, and nothing imports torch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lokal import catalog, gguf, models, profiles, temporary
from lokal.errors import IntegrityError, MissingDependency, ModelMismatch, ModelNotFound

log = logging.getLogger(__name__)

#: ``progress(bytes_done, bytes_total)``; the total is None when the server does not say.
Progress = Callable[[int, "int | None"], None]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOCK = 1 << 20
_TIMEOUT = 60.0
_PART = ".lokal-pull-"


@dataclass(frozen=True)
class Source:
    """Where a GGUF comes from, and what it must hash to."""

    #: what is fetched (after the hub's own redirects)
    url: str
    #: the publisher's sha256 of the file (the hub's), or None when nobody publishes one
    sha256: str | None
    size: int | None
    #: what the manifest records as the file's source
    origin: str
    #: the model the file is (a catalog hub id), for its profile and cache name
    model: str | None = None
    #: sent with the download (the hub's token, only to the hub itself)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pulled:
    path: Path
    manifest: dict[str, Any]
    #: False when the same file was already in place (nothing downloaded)
    downloaded: bool = True


def _refuse_offline() -> None:
    if models.offline():
        msg = (
            "downloads are off on this machine (LOKAL_OFFLINE or HF_HUB_OFFLINE is set); "
            "pull on a connected machine and copy the .gguf and its .json manifest here"
        )
        raise ModelNotFound(msg)


def hub_source(
    repo: str, file: str, *, revision: str | None = None, model: str | None = None
) -> Source:
    """A file on the Hugging Face hub (``HF_ENDPOINT`` is honoured), with the hub's sha256."""
    _refuse_offline()
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
    except ImportError as exc:
        raise MissingDependency(extra="gguf", feature="lokal models pull") from exc
    url = huggingface_hub.hf_hub_url(repo, file, revision=revision)
    try:
        meta = huggingface_hub.get_hf_file_metadata(url)
    except EntryNotFoundError as exc:
        msg = f"no file {file!r} in {repo} on the hub ({url})"
        raise ModelNotFound(msg) from exc
    except HfHubHTTPError as exc:
        msg = f"the hub refused {url}: {exc}"
        raise ModelNotFound(msg) from exc
    except Exception as exc:  # huggingface_hub raises many unrelated types for one failure
        msg = f"cannot reach the hub for {url} ({type(exc).__name__}: {exc}). Is it online?"
        raise ModelNotFound(msg) from exc
    etag = (meta.etag or "").lower()
    if not _SHA256.fullmatch(etag):
        msg = (
            f"the hub gives no sha256 for {repo}/{file} (etag {meta.etag!r}: not a large-file "
            "object), so the download cannot be verified; pass its URL and --sha256 instead"
        )
        raise IntegrityError(msg)
    commit = meta.commit_hash or revision or "main"
    headers: dict[str, str] = {}
    if _same_host(url, meta.location):
        token = huggingface_hub.get_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
    return Source(
        url=meta.location,
        sha256=etag,
        size=meta.size,
        origin=huggingface_hub.hf_hub_url(repo, file, revision=commit),
        model=model,
        headers=headers,
        details={"repo": repo, "file": file, "revision": commit, "sha256_from": "hub"},
    )


def url_source(url: str, *, sha256: str | None = None, model: str | None = None) -> Source:
    """A plain ``http(s)://`` URL; ``sha256`` is the publisher's, when there is one."""
    _refuse_offline()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        msg = f"not an http(s) URL: {url}"
        raise ModelNotFound(msg)
    return Source(
        url=url,
        sha256=_checked_sha(sha256),
        size=None,
        origin=url,
        model=model,
        details={"url": url, "sha256_from": "--sha256" if sha256 else None},
    )


def catalog_source(name: str, *, revision: str | None = None) -> Source:
    """The published GGUF of a catalog model, named by its hub id or its last part."""
    entry = catalog.find(name)
    published = catalog.PUBLISHED_GGUF.get(entry.hub_id) if entry else None
    if entry is None or published is None:
        what = f"catalog model {entry.hub_id}" if entry else f"'{name}' (not in lokal's catalog)"
        known = ", ".join(sorted(k.rsplit("/", 1)[-1] for k in catalog.PUBLISHED_GGUF))
        msg = (
            f"lokal knows no published GGUF of {what}. Name one on the hub with "
            f"--repo ORG/NAME --file FILE.gguf, or a URL; or make one with `lokal models pack "
            f"{name}` (needs lokal[convert], which needs torch). Known names: {known}"
        )
        raise ModelNotFound(msg)
    return hub_source(published.repo, published.file, revision=revision, model=entry.hub_id)


def _checked_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not _SHA256.fullmatch(value):
        msg = f"--sha256 must be 64 hex digits, got {sha256!r}"
        raise IntegrityError(msg)
    return value


def _same_host(a: str, b: str) -> bool:
    return urllib.parse.urlsplit(a).netloc == urllib.parse.urlsplit(b).netloc


class _NoAuthElsewhere(urllib.request.HTTPRedirectHandler):
    """Follows redirects, dropping the hub's token when one leads to another host."""

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, hdrs: Any, newurl: str
    ) -> Any:
        new = super().redirect_request(req, fp, code, msg, hdrs, newurl)
        if new is not None and not _same_host(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


def pull(
    source: Source,
    *,
    name: str | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> Pulled:
    """Download ``source``, check it, and place it with its manifest.

    Without ``output`` the file goes into lokal's model cache as ``NAME.QUANT.gguf`` (NAME: the
    catalog model's short name, else ``name``, else the file's own name), where ``Embedder``,
    ``lokal index --model NAME`` and ``lokal models verify`` find it. Another file already
    there (a GGUF packed from the same model is another variant, and an index made with it
    records that one) is :class:`ModelMismatch` unless ``force``.
    """
    target_dir = Path(output).parent if output else models.models_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target_dir)
    if output is None and source.sha256:
        existing = _already_pulled(target_dir, source.sha256)
        if existing is not None:
            log.info("%s is already in the model cache: %s", source.origin, existing.path)
            return existing
    part = _download(source, target_dir, progress)
    try:
        meta = gguf.read_metadata(part)
        # the profile comes from the model the file is; the cache name may be the user's
        model_name = source.model or name or _file_stem(source)
        short = (name or model_name).rstrip("/").rsplit("/", 1)[-1]
        quantization = models.gguf_quantization(meta)
        profile = profiles.from_gguf_metadata(meta, model_name)
        out = Path(output) if output else models.cached_gguf_path(short, quantization)
        manifest = _manifest(source, part, out, short, quantization, profile.to_dict())
        if not force:
            _refuse_replacing(out, manifest["sha256"])
        manifest_tmp = part.with_name(part.name + ".json")
        manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        part.replace(out)
        manifest_tmp.replace(models.manifest_path(out))
    except BaseException:
        for leftover in (part, part.with_name(part.name + ".json")):
            leftover.unlink(missing_ok=True)
        raise
    log.info("pulled %s -> %s (%s, %d bytes)", source.origin, out, quantization, manifest["size"])
    return Pulled(out, manifest)


def _download(source: Source, target_dir: Path, progress: Progress | None) -> Path:
    """Stream ``source`` into a temporary file in ``target_dir``; check size and sha256."""
    part = target_dir / temporary.name(_PART, ".part")
    digest = hashlib.sha256()
    done = 0
    request = urllib.request.Request(source.url, headers=source.headers)  # noqa: S310 (http(s) only)
    opener = urllib.request.build_opener(_NoAuthElsewhere)
    try:
        with opener.open(request, timeout=_TIMEOUT) as response, part.open("wb") as fh:
            length = response.headers.get("Content-Length")
            total = source.size or (int(length) if length and length.isdigit() else None)
            if progress is not None:
                progress(0, total)
            while block := response.read(_BLOCK):
                fh.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            fh.flush()
            os.fsync(fh.fileno())
        _check(source, done, total, digest.hexdigest())
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        msg = f"could not download {source.origin}: HTTP {exc.code} {exc.reason}"
        raise ModelNotFound(msg) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        part.unlink(missing_ok=True)
        msg = f"could not download {source.origin} ({type(exc).__name__}: {exc}); nothing was kept"
        raise ModelNotFound(msg) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part


def _check(source: Source, done: int, total: int | None, sha256: str) -> None:
    if total is not None and done != total:
        msg = f"download of {source.origin} stopped at {done} of {total} bytes; nothing was kept"
        raise IntegrityError(msg)
    if source.sha256 is not None and sha256 != source.sha256:
        whose = "the hub's" if source.details.get("sha256_from") == "hub" else "the expected"
        msg = (
            f"{source.origin}: downloaded {done} bytes with sha256 {sha256}, but {whose} sha256 "
            f"is {source.sha256}; nothing was kept"
        )
        raise IntegrityError(msg)
    if source.sha256 is None:
        log.warning(
            "%s: no published sha256 to check against (pass --sha256); recorded %s",
            source.origin,
            sha256,
        )


def _manifest(
    source: Source, part: Path, out: Path, name: str, quantization: str, profile: dict[str, Any]
) -> dict[str, Any]:
    sha256 = source.sha256 or models.file_sha256(part, use_cache=False)
    return {
        "format": 1,
        "file": out.name,
        "name": name,
        "size": part.stat().st_size,
        "sha256": sha256,
        "quantization": quantization,
        "source": source.origin,
        # the published file is the source: its sha256 is the model key's first part
        "source_sha256": sha256,
        "profile": profile,
        "pulled": {k: v for k, v in source.details.items() if v is not None},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _refuse_replacing(out: Path, sha256: str) -> None:
    if not out.exists():
        return
    try:
        existing = json.loads(models.manifest_path(out).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        existing = None
    existing = existing or models.file_sha256(out)
    if existing != sha256:
        msg = (
            f"{out} is already there and is another file (sha256 {existing[:16]}..., e.g. packed "
            "by `lokal models pack`; an index made with it records that one): pass --name to "
            "keep both, or --force to replace it"
        )
        raise ModelMismatch(msg)


def _file_stem(source: Source) -> str:
    """A model name from the file name: ``bge-small-en-v1.5-q8_0.gguf`` -> ``bge-small-en-v1.5``."""
    file = source.details.get("file") or urllib.parse.urlsplit(source.url).path.rsplit("/", 1)[-1]
    stem = urllib.parse.unquote(str(file))
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    stem = re.sub(r"[-.](?:ggml-model-)?(?:q\d\w*|f16|f32|bf16|iq\d\w*)$", "", stem, flags=re.I)
    return stem or "model"


def _already_pulled(target_dir: Path, sha256: str) -> Pulled | None:
    """A file of the cache whose manifest says ``sha256`` and that still matches it."""
    from lokal import packing

    for path in sorted(target_dir.glob("*.gguf")):
        try:
            manifest = packing.read_manifest(path)
            if manifest.get("sha256") == sha256:
                return Pulled(path, packing.verify(path), downloaded=False)
        except (IntegrityError, OSError):
            continue  # not this one, or damaged: pulled again
    return None


def _remove_stale_parts(target_dir: Path) -> None:
    """Temporary files of pulls whose process died (their names carry its id)."""
    for part in target_dir.glob(f"{_PART}*"):
        if temporary.writer_gone(part.name, _PART):
            part.unlink(missing_ok=True)


__all__ = ["Pulled", "Source", "catalog_source", "hub_source", "pull", "url_source"]
