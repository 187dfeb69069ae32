"""The index file's life: how it comes to be, is replaced, copied and followed.

The file is the contract between the one writer (the agent, or an application's own index) and
any number of readers, so every step that puts a file in place is crash-safe and never pairs a
database with another file's write-ahead log:

- **atomic create** (:func:`create`): the new file is built whole under a temporary name beside
  its place, synced, then *linked* into place (unlike a rename, a link never replaces a file
  another process created meanwhile). A crash leaves no index or a complete one; temporary files
  of creations whose process died are removed by the next creation (:func:`remove_stale`).
- **build beside and swap** (:class:`Build`): a replacement (the agent's rebuild for a new
  model, an evaluation's corpus index) is built in a file beside the old one, which keeps
  serving readers until the new one is complete and renamed over it.
- **snapshot** (:func:`snapshot`): a consistent single-file copy while a writer runs.
- **readers follow a swap** (:func:`replacement`): a read-only reader notices the file at its
  path is another file (inode) and reopens it, if its vectors are comparable.
- **WAL/-shm pairing**: a new file never meets a deleted one's ``-wal`` (:func:`remove_orphan_wal`),
  a swap empties the old file's log first (:func:`truncate_wal`), a removed file takes its
  ``-wal``/``-shm`` along (:func:`remove_with_wal`), and the agent leaves the file in rollback
  journal mode when it stops so read-only users can read it (:func:`leave_wal`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lokal import temporary
from lokal.errors import IndexFileError, ModelMismatch, ModelVariantWarning
from lokal.index import sqlite

if TYPE_CHECKING:
    from lokal.identity import ModelIdentity
    from lokal.index.store import Index

log = logging.getLogger(__name__)

#: An index file is never world-readable.
FILE_MODE = 0o640

_CREATING = ".creating-"
_BUILDING = ".building-"
_COMPANIONS = ("-wal", "-shm", "-journal")


# ---- atomic create ---------------------------------------------------------------------------


def create(path: Path, initialize: Callable[[Any], None]) -> None:
    """Create the database file ``path``: ``initialize(conn)`` fills it under a temporary
    name, which is then synced and linked into place. Raises IndexFileError when ``path``
    exists (before or meanwhile)."""
    if path.exists():
        msg = f"{path} already exists; open it with Index.open"
        raise IndexFileError(msg)
    remove_stale(path)
    tmp = _temporary(path, _CREATING)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    os.close(fd)
    try:
        conn = sqlite.connect(tmp)
        try:
            initialize(conn)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        remove_orphan_wal(path)  # never pair a new file with a deleted one's log
        try:
            os.link(tmp, path)  # unlike rename, never replaces a file created meanwhile
        except FileExistsError as exc:
            msg = f"{path} already exists; open it with Index.open"
            raise IndexFileError(msg) from exc
    finally:
        remove_with_wal(tmp)
    sqlite.fsync_directory(path.parent)


def _temporary(path: Path, kind: str) -> Path:
    return path.with_name(temporary.name(f".{path.name}{kind}"))


def remove_stale(path: Path) -> None:
    """Temporary files of creations and builds of ``path`` whose process died (their names
    carry the creating process's id)."""
    try:
        names = [p.name for p in path.parent.iterdir()]
    except FileNotFoundError:
        return
    for prefix in (f".{path.name}{_CREATING}", f".{path.name}{_BUILDING}"):
        for name in names:
            if temporary.writer_gone(name, prefix):
                base = next((name[: -len(s)] for s in _COMPANIONS if name.endswith(s)), name)
                remove_with_wal(path.parent / base)


# ---- build beside and swap -------------------------------------------------------------------


def build_path(path: str | os.PathLike[str]) -> Path:
    """Where a resumable build of ``path`` lives (the agent's rebuild for a new model)."""
    return Path(f"{path}.rebuild")


class Build:
    """A new index for ``path`` built in a file beside it and swapped over it when complete;
    until then the old file (if any) keeps serving readers.

    ``resumable``: the build file has a fixed name (:func:`build_path`) and a build of the same
    model found there is continued (an agent interrupted mid-rebuild); otherwise the name is
    private to this process and a dead process's leftover is removed.
    """

    def __init__(self, path: str | os.PathLike[str], *, resumable: bool = False) -> None:
        self.path = Path(path)
        self.resumable = resumable
        if resumable:
            self.temp = build_path(self.path)
        else:
            remove_stale(self.path)
            self.temp = _temporary(self.path, _BUILDING)

    def open(self, identity: ModelIdentity, **create_args: Any) -> Index:
        """The build's index, open for writing: the one left by an interrupted build of the
        same model (resumable builds), else a new empty one."""
        from lokal.index.store import Index

        agent = create_args.get("managed_by") == "agent"
        if self.resumable and self.temp.exists():
            try:
                return Index.open(self.temp, identity, writable=True, agent=agent)
            except ModelMismatch:
                remove_with_wal(self.temp)
        return Index.create(self.temp, identity, **create_args)

    def swap(self, index: Index) -> None:
        """Close the built ``index`` and put its file in place of the old one (atomically:
        a reader finds the old file or the new one, never none)."""
        index.close()  # the last connection: SQLite checkpoints and removes the -wal
        truncate_wal(self.path)
        os.replace(self.temp, self.path)
        sqlite.fsync_directory(self.path.parent)

    def discard(self) -> None:
        """Remove the build's file (an abandoned build)."""
        remove_with_wal(self.temp)


# ---- readers following a swap ----------------------------------------------------------------


def replacement(path: Path, inode: int, identity: ModelIdentity) -> Index | None:
    """The file now at ``path`` opened read-only, when it is another file than the reader's
    (``inode``: the agent swapped a rebuild in); None while it is the same, or briefly missing.
    ModelMismatch when its vectors cannot be compared with the reader's model (``identity``);
    a ModelVariantWarning for another variant of the same model."""
    try:
        now = os.stat(path).st_ino
    except OSError:
        return None  # gone for a moment (being replaced): keep reading the open file
    if now == inode:
        return None
    from lokal.index.store import Index

    fresh = Index.open(path)
    same = identity.compare(fresh.identity)
    if same == "different":
        fresh.close()
        msg = (
            f"{path} was rebuilt with {fresh.identity.describe()}; this reader holds "
            f"{identity.describe()}. Open the index again (with no model, to load the "
            "recorded one)."
        )
        raise ModelMismatch(msg)
    if same == "variant":
        warnings.warn(
            f"{path} was rebuilt with {fresh.identity.describe()}; this reader holds "
            f"{identity.describe()}: same model, slightly different vectors",
            ModelVariantWarning,
            stacklevel=5,
        )
    log.info("%s was replaced by the agent: reading the new file", path)
    return fresh


# ---- snapshot --------------------------------------------------------------------------------


def snapshot(conn: Any, dest: str | os.PathLike[str]) -> Path:
    """A consistent single-file copy of ``conn``'s database at ``dest`` (SQLite's backup API:
    what is still in the write-ahead log is included), put in place by a rename."""
    out = Path(dest)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    os.close(fd)
    copy(conn, tmp)
    tmp.replace(out)
    return out


def copy(conn: Any, dest: Path) -> None:
    """Copy ``conn``'s database into the file ``dest`` (rollback journal mode)."""
    target = sqlite.connect_plain(dest)
    try:
        conn.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()


# ---- WAL/-shm pairing ------------------------------------------------------------------------


def remove_orphan_wal(path: str | os.PathLike[str]) -> None:
    """Remove the -wal and -shm of a database file that is gone: SQLite would replay that log
    into whatever file is created under the same name next ("database disk image is
    malformed")."""
    if os.path.lexists(path):
        return
    for suffix in _COMPANIONS:
        stale = f"{path}{suffix}"
        if os.path.exists(stale):
            log.warning("removing %s: its database file is gone", stale)
            with suppress(FileNotFoundError):
                os.remove(stale)


def remove_with_wal(path: str | os.PathLike[str]) -> None:
    """Remove a database file and its -wal, -shm and -journal."""
    for suffix in ("", *_COMPANIONS):
        with suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def truncate_wal(path: Path) -> None:
    """Empty the write-ahead log of the database at ``path`` (if there is one), so no frame of
    it can be taken for a file swapped in under the same name."""
    if not path.exists():
        remove_orphan_wal(path)
        return
    conn = sqlite.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def leave_wal(conn: Any) -> None:
    """Switch a writer's file back to a rollback journal before its last connection closes,
    so read-only users (who cannot create the -shm a WAL database needs) can read it while no
    writer runs. Skipped, with no wait, when another connection has the file open."""
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    except Exception as exc:  # the SQLite module's own OperationalError: busy, or a full disk
        log.debug("left the index in WAL mode: %s", exc)
