"""``lokal models``: list, inspect, pack and verify models."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from lokal.agent.cli.options import backend_option, json_option
from lokal.agent.cli.output import emit_json, friendly_errors, table
from lokal.errors import LokalError, MissingDependency, ModelNotFound


@click.group()
def models() -> None:
    """List, inspect, pack, pull and verify models.

    \b
    Examples:
      lokal models list
      lokal models pack all-MiniLM-L6-v2 && lokal models verify
      lokal models pull bge-small-en-v1.5      # a published GGUF, no torch needed
    """


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """Models on disk, and a catalog of recommended models to shortlist from.

    \b
    Example:
      lokal models list --json
    """
    from lokal import catalog, packing
    from lokal import models as m

    on_disk = []
    for path in packing.cached_models():
        try:
            manifest = packing.read_manifest(path)
        except LokalError:
            manifest = {}
        on_disk.append(
            {
                "name": path.name,
                "path": str(path),
                "size": path.stat().st_size,
                "quantization": manifest.get("quantization", "?"),
                "source": manifest.get("source", "?"),
            }
        )
    on_disk += _onnx_packs()
    bundled = m.bundled_default_dir()
    entries: list[dict[str, Any]] = [
        {
            "hub_id": e.hub_id,
            "dimension": e.dimension,
            "context": e.context,
            "params_m": e.params_m,
            "licence": e.licence,
            "mteb_retrieval": e.mteb_retrieval,
            "source": e.source,
            "note": e.note,
            # a published GGUF `lokal models pull` fetches by name (no torch), or None
            "gguf": dataclasses.asdict(catalog.PUBLISHED_GGUF[e.hub_id])
            if e.hub_id in catalog.PUBLISHED_GGUF
            else None,
        }
        for e in catalog.CATALOG
    ]
    if as_json:
        emit_json(
            {
                "model_cache": str(m.models_dir()),
                "on_disk": on_disk,
                "bundled": str(bundled) if bundled else None,
                "catalog": entries,
            }
        )
        return
    click.echo(f"On disk (model cache {m.models_dir()}):")
    if on_disk:
        table(
            [
                [d["name"], d["quantization"], f"{d['size'] / 1e6:.1f} MB", d["source"]]
                for d in on_disk
            ],
            ["file", "quant", "size", "source"],
        )
    else:
        click.echo(f"  (none yet: {m.bring_command('all-MiniLM-L6-v2')})")
    if bundled:
        click.echo(f"Bundled sentence-transformers weights: all-MiniLM-L6-v2 at {bundled}")
    click.echo("\nCatalog (published English MTEB retrieval nDCG@10; check with lokal eval):")
    table(
        [
            [
                e["hub_id"],
                str(e["dimension"]),
                str(e["context"]),
                f"{e['params_m']:g}M",
                e["licence"],
                "-" if e["mteb_retrieval"] is None else f"{e['mteb_retrieval']:.2f}",
                e["note"],
            ]
            for e in entries
        ],
        ["model", "dim", "context", "size", "licence", "MTEB retr.", "note"],
    )
    pullable = [e["hub_id"].rsplit("/", 1)[-1] for e in entries if e["gguf"]]
    click.echo(f"\nA published GGUF, no torch needed: lokal models pull {' | '.join(pullable)}")


def _onnx_packs() -> list[dict[str, Any]]:
    """The ONNX packs in the model cache, as `lokal models list` shows them."""
    from lokal import packing_onnx

    rows = []
    for path in packing_onnx.cached_packs():
        try:
            manifest = packing_onnx.read_manifest(path)
        except LokalError:
            continue
        rows.append(
            {
                "name": path.name,
                "path": str(path),
                "size": sum(int(f.get("size", 0)) for f in manifest["files"].values()),
                "quantization": f"onnx {manifest.get('quantization', '?')}",
                "source": manifest.get("source", "?"),
            }
        )
    return rows


@models.command("info")
@click.argument("model", required=False)
@backend_option
@json_option
def models_info(model: str | None, backend: str, as_json: bool) -> None:
    """Profile, dimension, context, sha256 and size of MODEL (default: the embedded default).

    MODEL is a .gguf path, a sentence-transformers directory, a name in the model cache or a
    hub id; a reranker (cross-encoder) shows its reranker profile. Nothing is loaded: this
    reads the files only. An embedding model shows which evidence identified it (its
    sentence-transformers config, model card, weights' sha256 or name), every conflict between
    them, and the query prefixes its files ask for.

    \b
    Example:
      lokal models info ~/.cache/lokal/models/all-MiniLM-L6-v2.q8_0.gguf
    """
    from lokal import models as m
    from lokal.packing import source_sha256

    with friendly_errors():
        r = m.resolve(model, backend)
        reranker = _reranker_profile(r)
        info: dict[str, Any] = {
            "name": reranker.name if reranker else r.name,
            "kind": "reranker" if reranker else "embedding",
            "backend": r.backend,
            "location": r.location,
            "reason": r.reason,
            "quantization": r.quantization,
            "profile": dataclasses.asdict(reranker) if reranker else r.profile.to_dict(),
        }
        ident = None if reranker else r.profile.identification
        if ident is not None:
            info["identification"] = ident.to_dict()
        if r.path is not None:
            files = [r.path] if r.path.is_file() else [p for p in r.path.rglob("*") if p.is_file()]
            info["size"] = sum(p.stat().st_size for p in files)
            try:
                info["source_sha256"] = source_sha256(r)
            except ModelNotFound as exc:  # configs without weights: show what they say
                info["source_sha256"] = f"none ({exc})"
            if r.path.is_file():
                info["sha256"] = m.file_sha256(r.path)
    if as_json:
        emit_json(info)
        return
    rows = [
        ["name", info["name"]],
        ["kind", info["kind"]],
        ["backend", r.backend],
        ["location", r.location],
        ["chosen because", r.reason],
        ["quantization", r.quantization],
    ]
    if reranker is not None:
        rp = reranker
        gguf_support = rp.gguf + (f" ({rp.gguf_note})" if rp.gguf_note else "")
        rows += [
            ["family", rp.family + ("" if rp.known else " (unknown reranker)")],
            ["architecture", rp.architecture or "-"],
            ["context (tokens)", str(rp.context_length)],
            ["activation", rp.activation],
            ["input", rp.input_format],
            ["on GGUF", gguf_support],
            ["profile source", rp.source],
        ]
    else:
        rows += _embedding_profile_rows(r.profile)
        if ident is not None:
            rows += _evidence_rows(ident)
    for key in ("size", "sha256", "source_sha256"):
        if key in info:
            rows.append([key, str(info[key])])
    table(rows, ["field", "value"])


def _reranker_profile(r: Any) -> Any:
    """The reranker profile of a resolved model that is a cross-encoder, else None."""
    from lokal import profiles

    return profiles.reranker_profile(r) if profiles.model_kind(r) == profiles.RERANKER else None


def _embedding_profile_rows(p: Any) -> list[list[str]]:
    return [
        ["family", p.family + ("" if p.known else " (unknown model)")],
        ["query prefix", repr(p.query_prefix)],
        ["document prefix", repr(p.document_prefix)],
        ["context (tokens)", str(p.context_length)],
        ["dimension", str(p.dimension)],
        ["pooling", str(p.pooling)],
        ["normalized", str(p.normalize)],
        ["matryoshka dims", ", ".join(map(str, p.matryoshka_dims)) or "-"],
        ["profile source", p.source],
    ]


def _evidence_rows(ident: Any) -> list[list[str]]:
    """Which evidence identified the model, all of it, what disagrees and what is asked."""
    rows = [["identified as", ident.describe()]]
    rows += [["evidence", e.describe()] for e in ident.evidence]
    rows += [["CONFLICT", c] for c in ident.conflicts]
    if ident.asked_prefixes:
        asked = ", ".join(repr(a) for a in ident.asked_prefixes)
        rows.append(["asks for", f"{asked} ({ident.asked_where})"])
    rows += [["note", n] for n in ident.notes]
    return rows


@models.command("pack")
@click.argument("source")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["gguf", "onnx"]),
    default="gguf",
    show_default=True,
    help="gguf: a GGUF for llama.cpp; onnx: a directory for ONNX Runtime (encoders only).",
)
@click.option(
    "-q",
    "--quantize",
    "quantization",
    help="GGUF: q8_0 (default: near-lossless), f16, f32, or a smaller type such as q5_0 "
    "or q4_k_m (measure with lokal eval: small models lose quality at 4 bits). "
    "ONNX: int8 (default) or fp32.",
)
@click.option(
    "--cpu",
    "cpu_preset",
    type=click.Choice(["avx512_vnni", "avx2", "arm64"]),
    help="ONNX int8: the CPU the weights are quantized for (default: this machine's).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write here instead of lokal's model cache (an ONNX pack is a directory).",
)
@click.option("--name", help="Name in the model cache (default: the source's name).")
@json_option
def models_pack(
    source: str,
    fmt: str,
    quantization: str | None,
    cpu_preset: str | None,
    output: Path | None,
    name: str | None,
    as_json: bool,
) -> None:
    """Pack SOURCE (a sentence-transformers/HF directory or hub id) into a GGUF or an ONNX pack.

    The result records the source weights' sha256 and the model's profile, and gets a manifest
    (FILE.json beside a GGUF; lokal-onnx.json inside an ONNX pack) for `lokal models verify`.
    Pack on a connected machine, copy the result to an offline box, verify there.

    \b
    Examples:
      lokal models pack all-MiniLM-L6-v2            # bundled weights -> model cache, q8_0
      lokal models pack BAAI/bge-small-en-v1.5 -o bge-small.q8_0.gguf
      lokal models pack all-MiniLM-L6-v2 --format onnx --quantize int8
    """
    if fmt == "onnx":
        _pack_onnx(source, quantization or "int8", cpu_preset, output, name, as_json)
        return
    if cpu_preset is not None:
        msg = "--cpu is for --format onnx"
        raise click.BadParameter(msg, param_hint="--cpu")
    from lokal import packing

    quantization = quantization or "q8_0"
    with friendly_errors():
        try:
            packed = packing.pack(source, quantization=quantization, output=output, name=name)
        except ValueError as exc:
            if isinstance(exc, LokalError):  # a ProfileError is about the model, not -q
                raise
            raise click.BadParameter(str(exc), param_hint="--quantize") from exc
        except MissingDependency as exc:
            if exc.extra != "convert":
                raise
            from lokal.models import bring_command

            msg = f"MissingDependency: {exc}; or, without torch: {bring_command(source)}"
            raise click.ClickException(msg) from exc
    if as_json:
        emit_json({"path": str(packed.path), **packed.manifest})
    else:
        mb = packed.manifest["size"] / 1e6
        click.echo(
            f"packed {source} -> {packed.path} ({quantization}, {mb:.1f} MB, "
            f"sha256 {packed.manifest['sha256'][:16]}...)"
        )
        from lokal import cpu

        best = cpu.advice()
        if quantization in ("q8_0", "f16") and best.quantization != quantization:
            click.echo(f"note: {best}; pack with -q {best.quantization} for this box", err=True)
        elif quantization in ("q8_0", "f16"):
            click.echo(f"{best} (a box with another CPU may want the other: docs/benchmarks.md)")


def _pack_onnx(
    source: str,
    quantization: str,
    cpu_preset: str | None,
    output: Path | None,
    name: str | None,
    as_json: bool,
) -> None:
    from lokal import packing_onnx

    with friendly_errors():
        try:
            packed = packing_onnx.pack(
                source, quantization=quantization, cpu_preset=cpu_preset, output=output, name=name
            )
        except ValueError as exc:
            if isinstance(exc, LokalError):  # a ProfileError is about the model, not -q
                raise
            raise click.BadParameter(str(exc), param_hint="--quantize") from exc
    manifest = packed.manifest
    if as_json:
        emit_json({"path": str(packed.path), **manifest})
        return
    mb = sum(f["size"] for f in manifest["files"].values()) / 1e6
    parity = manifest["parity"]
    made_for = f", for {manifest['cpu']}" if manifest.get("cpu") else ""
    click.echo(
        f"packed {source} -> {packed.path} (ONNX {quantization}{made_for}, {mb:.1f} MB; cosine "
        f"to PyTorch: least {parity['min_cosine']:.4f}, mean {parity['mean_cosine']:.4f})"
    )


@models.command("verify")
@click.argument("files", nargs=-1, type=click.Path(exists=True, path_type=Path))
@json_option
def models_verify(files: tuple[Path, ...], as_json: bool) -> None:
    """Check packed GGUF files and ONNX packs against their manifests (size and sha256).

    With no FILES, checks every model in lokal's model cache. Exits 1 if any file fails.

    \b
    Example:
      lokal models verify /srv/models/bge-small.q8_0.gguf
    """
    from lokal import packing, packing_onnx

    targets = list(files) or packing.cached_models() + packing_onnx.cached_packs()
    results = []
    for path in targets:
        try:
            if path.is_dir():
                manifest = packing_onnx.verify(path)
                digest = manifest["files"][packing_onnx.MODEL_FILE]["sha256"]
            else:
                digest = packing.verify(path)["sha256"]
            results.append({"path": str(path), "ok": True, "sha256": digest})
        except (LokalError, OSError) as exc:
            results.append({"path": str(path), "ok": False, "error": str(exc)})
    if as_json:
        emit_json(results)
    else:
        if not results:
            click.echo("no models to verify")
        for r in results:
            click.echo(
                f"{'OK  ' if r['ok'] else 'FAIL'} {r['path']}"
                + ("" if r["ok"] else f": {r['error']}")
            )
    if any(not r["ok"] for r in results):
        sys.exit(1)


@models.command("pull")
@click.argument("model", required=False)
@click.option("--repo", help="A hub repository holding the GGUF (ORG/NAME); with --file.")
@click.option("--file", "file_name", help="The .gguf file in --repo.")
@click.option("--revision", help="A branch, tag or commit of the hub repository (default: main).")
@click.option(
    "--sha256",
    help="The publisher's sha256 of a file pulled by URL (the hub's own is used for hub files).",
)
@click.option("--name", help="Name in the model cache (default: the model's name).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of lokal's model cache.",
)
@click.option("--force", is_flag=True, help="Replace another file of the same name.")
@json_option
def models_pull(
    model: str | None,
    repo: str | None,
    file_name: str | None,
    revision: str | None,
    sha256: str | None,
    name: str | None,
    output: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Download a published GGUF of MODEL into lokal's model cache, checked against the hub's
    sha256 for it, with its manifest (no torch needed: the way to a model with lokal[gguf]).

    MODEL is a catalog model with a published GGUF (see the code's list in lokal.catalog:
    all-MiniLM-L6-v2, bge-small-en-v1.5, bge-base-en-v1.5, nomic-embed-text-v1.5), or an
    http(s) URL of a .gguf file. Any other GGUF on the hub: --repo ORG/NAME --file F.gguf (with
    MODEL naming the model it is, for its profile). This is the one lokal command that uses the
    network; a partial or mismatching download leaves nothing behind.

    \b
    Examples:
      lokal models pull bge-small-en-v1.5
      lokal models pull BAAI/bge-m3 --repo ORG/bge-m3-GGUF --file bge-m3-Q8_0.gguf
      lokal models pull https://example.org/m.gguf --sha256 HEX --name my-model
    """
    from lokal import pull
    from lokal.agent.cli.output import DownloadBar

    if bool(repo) != bool(file_name):
        msg = "--repo and --file go together"
        raise click.UsageError(msg)
    if not (model or repo):
        msg = "name a MODEL, a URL, or --repo ORG/NAME --file F.gguf"
        raise click.UsageError(msg)
    if sha256 and repo:
        msg = "--sha256 is for URLs: a hub file is checked against the hub's own sha256"
        raise click.UsageError(msg)
    bar = DownloadBar("pulling")
    with friendly_errors():
        if repo and file_name:
            source = pull.hub_source(repo, file_name, revision=revision, model=model)
        elif model and model.startswith(("http://", "https://")):
            source = pull.url_source(model, sha256=sha256)
        else:
            assert model is not None
            if sha256:
                msg = "--sha256 is for URLs: a hub file is checked against the hub's own sha256"
                raise click.UsageError(msg)
            source = pull.catalog_source(model, revision=revision)
        try:
            pulled = pull.pull(source, name=name, output=output, progress=bar, force=force)
        finally:
            bar.close()
    if as_json:
        emit_json({"path": str(pulled.path), "downloaded": pulled.downloaded, **pulled.manifest})
        return
    m = pulled.manifest
    verb = "pulled" if pulled.downloaded else "already in the model cache:"
    click.echo(
        f"{verb} {m['source']} -> {pulled.path} ({m['quantization']}, {m['size'] / 1e6:.1f} MB, "
        f"sha256 {m['sha256'][:16]}...)"
    )
