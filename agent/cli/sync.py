"""``lokal sync`` and ``lokal central``: the fleet's commands, thin over :mod:`lokal.central`.

Passwords never go in a command line: ``--password-file FILE`` (its first line), or libpq's
``PGPASSWORD`` / ``~/.pgpass``. A URL with a password in it is refused.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from lokal.agent.cli.options import json_option
from lokal.agent.cli.output import emit_json as _emit_json
from lokal.agent.cli.output import friendly_errors as _friendly_errors
from lokal.agent.cli.output import table as _table

F = TypeVar("F", bound=Callable[..., Any])


def schema_option(f: F) -> F:
    return click.option(
        "--schema",
        "schema_name",
        default="lokal",
        show_default=True,
        envvar="LOKAL_CENTRAL_SCHEMA",
        help="The central collection (a PostgreSQL schema; one per model).",
    )(f)


def password_option(f: F) -> F:
    return click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File whose first line is the PostgreSQL password (else PGPASSWORD or ~/.pgpass).",
    )(f)


def url_option(f: F) -> F:
    return click.option(
        "--url",
        required=True,
        envvar="LOKAL_CENTRAL_URL",
        show_envvar=True,
        help="The central store: postgresql://user@host/db (no password in it).",
    )(f)


def _password(url: str, password_file: Path | None) -> str | None:
    from lokal.central.connect import check_url, read_password

    check_url(url)
    return read_password(password_file, None)


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)


class _Progress:
    """A bar on a terminal's stderr; JSON lines on stderr when it is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            line = {"event": "progress", "stage": self.label, "done": done, "total": total}
            click.echo(json.dumps(line), err=True)
            return
        if self._bar is None:
            self._bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.command("sync")
@click.option(
    "--index",
    "index_path",
    envvar="LOKAL_INDEX",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The index file to send.",
)
@click.option(
    "--from",
    "bundles",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundles to apply instead of --index (also: --from B1 B2 ..., e.g. a glob).",
)
@click.argument("more_bundles", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to", "target", required=True, help="postgresql://... or a file ending .lokalbundle."
)
@click.option("--site", help="This box's site name (lower case; required with --index).")
@schema_option
@password_option
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True)
@json_option
def sync_cmd(
    index_path: Path | None,
    bundles: tuple[Path, ...],
    more_bundles: tuple[Path, ...],
    target: str,
    site: str | None,
    schema_name: str,
    password_file: Path | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Send an index's changes to the central PostgreSQL store, or into a bundle file.

    The centre says what it has applied; only the changes after it travel, in batches of one
    transaction each. Interrupted (kill, lost network), it continues where it stopped the
    next time. A rebuilt index replaces the site's rows at once when it is complete.

    \b
    Examples:
      lokal sync --index /var/lib/lokal/index.db --to postgresql://box@central/fleet --site plant-a
      lokal sync --index index.db --site plant-b --to /media/usb/plant-b-$(date +%F).lokalbundle
      lokal sync --to postgresql://admin@central/fleet --from /media/usb/plant-b-*.lokalbundle

    Bundles are applied in the order of their numbers, whatever the order given.
    """
    from lokal.central.bundle import is_bundle_path
    from lokal.central.connect import is_url

    if more_bundles and not bundles:
        msg = f"unexpected arguments {' '.join(map(str, more_bundles))} (bundles go after --from)"
        raise click.UsageError(msg)
    bundles = (*bundles, *more_bundles)
    if bundles:
        if index_path is not None or not is_url(target):
            msg = "--from BUNDLE applies bundles to --to postgresql://...; leave out --index"
            raise click.UsageError(msg)
        _apply_bundles(bundles, target, schema_name, password_file, as_json)
        return
    if index_path is None or not site:
        msg = "give --index FILE and --site NAME (or --from BUNDLE)"
        raise click.UsageError(msg)
    if is_bundle_path(target):
        _write_bundle(index_path, Path(target), site, as_json)
    elif is_url(target):
        _sync(index_path, target, site, schema_name, password_file, batch_size, as_json)
    else:
        msg = f"--to must be postgresql://... or a file ending .lokalbundle, got {target!r}"
        raise click.UsageError(msg)


def _sync(
    index_path: Path,
    url: str,
    site: str,
    schema_name: str,
    password_file: Path | None,
    batch_size: int,
    as_json: bool,
) -> None:
    from lokal.central.sync import sync
    from lokal.index import Index

    progress = _Progress(f"sync {site}")
    with _friendly_errors(), _warnings_to_stderr():
        password = _password(url, password_file)
        with Index.open(index_path) as index:
            try:
                result = sync(
                    index,
                    url,
                    site,
                    schema_name=schema_name,
                    password=password,
                    batch_size=batch_size,
                    progress=progress,
                )
            finally:
                progress.close()
    if as_json:
        _emit_json(result.to_dict())
    else:
        how = "whole generation, swapped in" if result.replaced else "incremental"
        click.echo(
            f"site {result.site}: {result.sent} changes sent in {result.batches} batches "
            f"({how}); the centre has applied up to change {result.applied_seq} "
            f"({result.seconds:.1f} s)"
        )


def _write_bundle(index_path: Path, out: Path, site: str, as_json: bool) -> None:
    from lokal.central.bundle import write_bundle
    from lokal.index import Index

    with _friendly_errors(), Index.open(index_path) as index:
        info = write_bundle(index, out, site)
    if as_json:
        _emit_json({"written": info is not None, "bundle": info and info.to_dict()})
    elif info is None:
        click.echo(f"nothing changed since the last bundle of site {site}; no file written")
    else:
        click.echo(f"{out}: {info.describe()}")


def _apply_bundles(
    bundles: tuple[Path, ...],
    url: str,
    schema_name: str,
    password_file: Path | None,
    as_json: bool,
) -> None:
    from lokal.central.bundle import apply_bundle, read_header

    results = []
    with _friendly_errors(), _warnings_to_stderr():
        password = _password(url, password_file)
        infos = {path: read_header(path) for path in bundles}  # for their order: apply checks
        for path in sorted(bundles, key=lambda p: (infos[p].site, infos[p].number)):
            r = apply_bundle(path, url, schema_name=schema_name, password=password)
            results.append({"path": str(path), **r.to_dict()})
            if not as_json:
                click.echo(f"{path}: {r.status} ({r.applied} changes): {r.info.describe()}")
    if as_json:
        _emit_json(results)


# ---- lokal central ----------------------------------------------------------------------------


@click.group("central")
def central() -> None:
    """The central store (PostgreSQL + pgvector) that `lokal sync` fills.

    \b
    Examples:
      lokal central init postgresql://admin@central/fleet --index index.db
      lokal central add-site plant-a --url postgresql://admin@central/fleet
      lokal central status --url postgresql://admin@central/fleet
    """


@central.command("init")
@click.argument("url")
@schema_option
@password_option
@click.option(
    "--index",
    "index_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An index whose model the collection records (else the first sync's).",
)
def central_init(
    url: str, schema_name: str, password_file: Path | None, index_path: Path | None
) -> None:
    """Create or migrate the central schema (the first sync does it too, as the owner).

    \b
    Examples:
      lokal central init postgresql://postgres@central:5432/fleet
      lokal central init postgresql://postgres@central/fleet --index index.db --schema manuals
    """
    from lokal.central import schema
    from lokal.central.connect import connect
    from lokal.index import Index

    with _friendly_errors(), _warnings_to_stderr():
        password = _password(url, password_file)
        identity = Index.recorded_identity(index_path) if index_path else None
        conn = connect(url, password=password, vector=False)
        try:
            ran = schema.migrate(conn, schema_name, identity)
            recorded = schema.recorded_identity(conn, schema_name)
        finally:
            conn.close()
    click.echo(
        f"schema {schema_name}: "
        + (f"migrations {ran} applied" if ran else "up to date")
        + (f"; model {recorded.describe()}" if recorded else "; model: set by the first sync")
    )


@central.command("add-site")
@click.argument("site")
@url_option
@schema_option
@password_option
@click.option("--role", help="Login role for the box (default: <schema>_site_<site>).")
@click.option(
    "--password-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the box's new password to this file (mode 600) instead of printing it.",
)
def central_add_site(
    site: str,
    url: str,
    schema_name: str,
    password_file: Path | None,
    role: str | None,
    password_out: Path | None,
) -> None:
    """Register SITE with a login role that may write only that site's rows (row-level
    security), and print what to give the box. Run again to set a new password.

    \b
    Examples:
      lokal central add-site plant-a --url postgresql://postgres@central/fleet \\
          --password-out plant-a.pw
    """
    import os

    from lokal.central import schema
    from lokal.central.connect import connect, psycopg_module

    psycopg = psycopg_module()
    with _friendly_errors():
        password = _password(url, password_file)
        conn = connect(url, password=password, vector=False)
        try:
            role, secret = schema.add_site(conn, schema_name, site, role=role)
        except psycopg.errors.InsufficientPrivilege as exc:
            msg = f"this role may not create roles: {exc.diag.message_primary}"
            raise click.ClickException(msg) from exc
        finally:
            conn.close()
    box_url = _with_user(url, role)
    if password_out:
        fd = os.open(password_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise: the owner's alone
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    click.echo(f"site {site} added; its role {role} writes only this site's rows.")
    click.echo("Give the box (its [sync] section in agent.toml, or lokal sync):")
    click.echo(f"  url = {box_url!r}")
    click.echo(f"  site = {site!r}")
    if password_out:
        click.echo(f"  password_file = the file {password_out} (copy it to the box, mode 600)")
    else:
        click.echo("  password_file = a file (mode 600) holding this one line:")
        click.echo(f"  {secret}")


def _with_user(url: str, user: str) -> str:
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}@{host}"))


@central.command("remove-site")
@click.argument("site")
@url_option
@schema_option
@password_option
def central_remove_site(site: str, url: str, schema_name: str, password_file: Path | None) -> None:
    """Retire SITE: delete its rows and registration, and drop its role (kept, with the
    reason, when something else still needs it; it can write nothing here either way).

    \b
    Examples:
      lokal central remove-site plant-a --url postgresql://postgres@central/fleet
    """
    from lokal.central import schema
    from lokal.central.connect import connect

    with _friendly_errors():
        password = _password(url, password_file)
        conn = connect(url, password=password, vector=False)
        try:
            removed = schema.remove_site(conn, schema_name, site)
        finally:
            conn.close()
    role = ""
    if removed.role:
        fate = "dropped" if removed.role_dropped else f"kept: {removed.note}"
        role = f"; its role {removed.role} {fate}"
    click.echo(f"site {site} removed ({removed.chunks} chunks deleted){role}")


@central.command("status")
@url_option
@schema_option
@password_option
@json_option
def central_status(url: str, schema_name: str, password_file: Path | None, as_json: bool) -> None:
    """The sites the role may see: generation, last change applied, last sync, chunks.

    \b
    Examples:
      lokal central status --url postgresql://reader@central/fleet --json
    """
    from lokal.central.sync import site_status

    with _friendly_errors():
        password = _password(url, password_file)
        rows = site_status(url, schema_name, password=password)
    if as_json:
        _emit_json(rows)
        return
    _table(
        [
            [
                r["site"],
                (r["generation"] or "-")[:12],
                str(r["applied_seq"]),
                str(r["chunks"]),
                r["synced_at"] or "never",
                r["role"] or "-",
            ]
            for r in rows
        ],
        ["site", "generation", "applied", "chunks", "synced at", "role"],
    )


def sync_status_line(sync: dict[str, Any]) -> str:
    """``lokal agent status``'s line about the [sync] section."""
    import time

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

    behind = sync.get("behind")
    lag = "lag unknown" if behind is None else f"{behind} changes behind"
    line = (
        f"sync: site {sync.get('site')} -> {sync.get('url')}: {lag}; "
        f"last success {when(sync.get('last_success'))}"
    )
    if sync.get("last_error"):
        line += f"; last error: {sync['last_error']}"
    return line
