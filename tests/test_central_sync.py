"""`lokal sync` to a real PostgreSQL + pgvector (pgserver): the central schema and its rights,
incremental and resumable batches, new generations, bundles, the real CLI killed at random."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lokal.errors import BundleError, CentralError, ModelMismatch, ModelVariantWarning
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index

psycopg = pytest.importorskip("psycopg")

from lokal.central import schema  # noqa: E402
from lokal.central.sync import sync  # noqa: E402

LOKAL = str(Path(sys.executable).parent / "lokal")
DIM = 8
IDENTITY = ModelIdentity.external("test", "Hand", "hand-made", DIM)


def vecs(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_index(path: Path, n: int, *, seed: int = 0, identity: ModelIdentity = IDENTITY) -> Index:
    ix = Index.create(path, identity)
    for d in range(0, n, 10):
        chunks = [
            Chunk(f"doc {d} chunk {i} seed {seed}", ordinal=i, metadata={"n": d + i, "seed": seed})
            for i in range(min(10, n - d))
        ]
        ix.replace_document(f"/docs/{d}.txt", chunks, vecs(len(chunks), seed * 1000 + d))
    return ix


def central_rows(
    dsn: str, site: str | None = None, s: str = "lokal"
) -> dict[tuple[str, str], tuple]:
    with psycopg.connect(dsn) as conn:
        where = "" if site is None else " WHERE site = %s"
        rows = conn.execute(
            "SELECT site, chunk_id, path, ordinal, text, metadata, embedding::text "
            f"FROM {s}.chunks{where}",
            () if site is None else (site,),
        ).fetchall()
    return {
        (r[0], r[1]): (r[2], r[3], r[4], r[5], np.array(eval(r[6]), dtype=np.float32)) for r in rows
    }


def expected_rows(ix: Index, site: str) -> dict[tuple[str, str], tuple]:
    out = {}
    for c in ix.changes(0, 1_000_000):
        if c.op == "upsert":
            out[(site, c.chunk_id)] = (c.document, c.ordinal, c.text, c.metadata, c.vector)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert g[:4] == w[:4], k
        assert np.allclose(g[4], w[4], atol=1e-6), k


def test_first_sync_then_incremental_with_deletes(tmp_path: Path, pg_dsn: str) -> None:
    ix = make_index(tmp_path / "a.db", 35)
    r = sync(ix, pg_dsn, "plant-a", batch_size=10)
    assert r.sent == 35 and r.batches == 4 and not r.replaced
    assert_same(central_rows(pg_dsn), expected_rows(ix, "plant-a"))
    ix.replace_document("/docs/0.txt", [Chunk("rewritten", ordinal=0)], vecs(1, 99))
    ix.delete_document("/docs/10.txt")
    r = sync(ix, pg_dsn, "plant-a", batch_size=10)
    assert r.sent == 20 and r.applied_seq == ix.last_seq
    assert_same(central_rows(pg_dsn), expected_rows(ix, "plant-a"))
    r = sync(ix, pg_dsn, "plant-a")
    assert r.sent == 0 and r.batches == 0
    ix.close()


def test_every_column_arrives_exactly_as_the_index_holds_it(tmp_path: Path, pg_dsn: str) -> None:
    """The sync encodes PostgreSQL's binary COPY itself (lokal.central.wire): text beyond ASCII,
    NULL positions, line numbers and token counts, nested metadata and the float32 vectors bit
    for bit, for the owner (COPY straight into the table) and a site's role (through a
    temporary table, under row security); the generated tsvector is there to search."""
    v = vecs(3, 7)
    v[1] = np.nextafter(v[1], np.float32(2))  # values float32 holds but a decimal text may not
    chunks = [
        Chunk("Pumpe zurücksetzen: 再起動 🚒 \\ \t tab", ordinal=0, metadata={"ä": ["ß", 1.5]}),
        Chunk(
            "plain pump manual",
            ordinal=1,
            char_start=10,
            char_end=27,
            line_start=3,
            line_end=4,
            tokens=5,
            metadata={"nested": {"deep": [None, True, -(2**40)]}, "site_note": "x"},
        ),
        Chunk("", ordinal=2),
    ]
    with psycopg.connect(pg_dsn) as admin:
        schema.migrate(admin, "lokal", IDENTITY)
        role, password = schema.add_site(admin, "lokal", "b")
    for site, url, name in (("a", pg_dsn, "a.db"), ("b", as_role(pg_dsn, role), "b.db")):
        with Index.create(tmp_path / name, IDENTITY) as ix:
            ix.replace_document("/docs/é.txt", chunks, v)
            sync(ix, url, site, password=None if site == "a" else password)
            want = {c.chunk_id: c for c in ix.changes(0, 100)}
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(
                "SELECT chunk_id, path, ordinal, text, char_start, char_end, line_start, "
                "line_end, tokens, metadata, embedding::real[] FROM lokal.chunks WHERE site = %s",
                (site,),
            ).fetchall()
            found = conn.execute(
                "SELECT chunk_id FROM lokal.chunks WHERE site = %s AND tsv @@ "
                "plainto_tsquery('english', 'pump manual')",
                (site,),
            ).fetchall()
        assert len(rows) == 3 and found == [("/docs/é.txt#1",)]
        for r in rows:
            c = want[r[0]]
            assert r[1:9] == (
                c.document,
                c.ordinal,
                c.text,
                c.char_start,
                c.char_end,
                c.line_start,
                c.line_end,
                c.tokens,
            )
            assert r[9] == c.metadata
            assert np.array_equal(np.array(r[10], dtype=np.float32), c.vector)


def as_role(dsn: str, role: str) -> str:
    assert dsn.startswith("postgresql://postgres:@/")
    return dsn.replace("postgresql://postgres:@/", f"postgresql://{role}@/", 1)


def test_a_site_role_writes_only_its_own_rows(tmp_path: Path, pg_dsn: str) -> None:
    """Row-level security, enforced by PostgreSQL itself: site a's role cannot see, change,
    delete or add site b's rows, nor move b's sync state; syncing as b is refused."""
    with psycopg.connect(pg_dsn) as admin:
        role_a, password_a = schema.add_site(admin, "lokal", "a")
        role_b, _ = schema.add_site(admin, "lokal", "b")
    assert role_a == "lokal_site_a" and len(password_a) >= 24
    ix_a = make_index(tmp_path / "a.db", 20, seed=1)
    ix_b = make_index(tmp_path / "b.db", 20, seed=2)
    # the first sync by a site role cannot create the collection: the owner does (init)
    with pytest.raises(CentralError, match="needs migrating"):
        sync(ix_a, as_role(pg_dsn, role_a), "a", password=password_a)
    with psycopg.connect(pg_dsn) as admin:
        schema.migrate(admin, "lokal", IDENTITY)
    sync(ix_a, as_role(pg_dsn, role_a), "a", password=password_a)
    sync(ix_b, as_role(pg_dsn, role_b), "b")
    before_b = central_rows(pg_dsn, "b")
    assert len(before_b) == 20

    with psycopg.connect(as_role(pg_dsn, role_a), autocommit=True) as box:
        assert box.execute("SELECT count(*) FROM lokal.chunks").fetchone()[0] == 20  # its own
        assert box.execute("SELECT count(*) FROM lokal.sites").fetchone()[0] == 1
        for sql in (
            "UPDATE lokal.chunks SET text = 'x' WHERE site = 'b'",
            "DELETE FROM lokal.chunks WHERE site = 'b'",
            "UPDATE lokal.sites SET applied_seq = 0 WHERE site = 'b'",
        ):
            assert box.execute(sql).rowcount == 0, sql
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            box.execute(
                "INSERT INTO lokal.chunks (site, chunk_id, text, embedding) "
                "VALUES ('b', 'forged', 'x', %s::vector)",
                (str([0.1] * DIM),),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            box.execute("UPDATE lokal.chunks SET site = 'b' WHERE site = 'a'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            box.execute("UPDATE lokal.sites SET db_role = 'lokal_site_a' WHERE site = 'b'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            box.execute("DROP TABLE lokal.chunks")
    with pytest.raises(CentralError, match="site 'b'"):
        sync(ix_a, as_role(pg_dsn, role_a), "b")
    assert_same(central_rows(pg_dsn, "b"), before_b)
    assert_same(central_rows(pg_dsn, "a"), expected_rows(ix_a, "a"))
    ix_a.close()
    ix_b.close()


def test_a_reader_role_reads_every_site_and_writes_nothing(tmp_path: Path, pg_dsn: str) -> None:
    with make_index(tmp_path / "a.db", 10) as ix:
        sync(ix, pg_dsn, "a")
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE app_reader LOGIN IN ROLE lokal_reader")
    with psycopg.connect(as_role(pg_dsn, "app_reader"), autocommit=True) as app:
        assert app.execute("SELECT count(*) FROM lokal.chunks").fetchone()[0] == 10
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("DELETE FROM lokal.chunks")


def test_another_model_key_is_refused_naming_both_a_variant_warns(
    tmp_path: Path, pg_dsn: str
) -> None:
    with make_index(tmp_path / "a.db", 5) as ix:
        sync(ix, pg_dsn, "a")
    other = ModelIdentity.external("test", "Other", "other-model", DIM)
    with make_index(tmp_path / "b.db", 5, identity=other) as ix:
        with pytest.raises(ModelMismatch, match=r"hand-made.*other-model"):
            sync(ix, pg_dsn, "b")
    variant = dataclasses.replace(IDENTITY, quantization="q8_0")
    assert variant.compare(IDENTITY) == "variant"
    with make_index(tmp_path / "c.db", 5, identity=variant) as ix:
        with pytest.warns(ModelVariantWarning, match="slightly different"):
            r = sync(ix, pg_dsn, "c")
    assert r.sent == 5
    assert {k[0] for k in central_rows(pg_dsn)} == {"a", "c"}


def test_three_sites_sync_concurrently(tmp_path: Path, pg_dsn: str) -> None:
    indexes = {f"s{i}": make_index(tmp_path / f"s{i}.db", 60, seed=i) for i in range(3)}
    errors: list[BaseException] = []

    def run(site: str) -> None:
        try:
            for _ in range(2):
                sync(indexes[site], pg_dsn, site, batch_size=7)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(site,)) for site in indexes]
    for t in threads:
        t.start()
    # the sites keep changing while they sync
    for i, ix in enumerate(indexes.values()):
        ix.delete_document("/docs/0.txt")
        ix.replace_document("/docs/new.txt", [Chunk(f"new {i}")], vecs(1, 50 + i))
    for t in threads:
        t.join()
    assert not errors, errors
    for site, ix in indexes.items():
        sync(ix, pg_dsn, site)
    want: dict = {}
    for site, ix in indexes.items():
        want |= expected_rows(ix, site)
    assert_same(central_rows(pg_dsn), want)
    for ix in indexes.values():
        ix.close()


def test_a_batch_sent_twice_changes_nothing(tmp_path: Path, pg_dsn: str) -> None:
    from lokal.central.connect import connect
    from lokal.central.sync import apply_batch

    ix = make_index(tmp_path / "a.db", 20)
    sync(ix, pg_dsn, "a", batch_size=5)
    first = ix.changes(0, 5)
    ix.replace_document("/docs/0.txt", [Chunk("changed since", ordinal=0)], vecs(1, 7))
    sync(ix, pg_dsn, "a")
    before = central_rows(pg_dsn)
    with connect(pg_dsn) as conn:  # a stale copy of the first batch arrives again
        assert apply_batch(conn, "lokal", "a", "chunks", ix.generation, 0, first) == 0
    assert_same(central_rows(pg_dsn), before)
    assert_same(before, expected_rows(ix, "a"))
    ix.close()


def test_a_connection_cut_mid_batch_loses_nothing(tmp_path: Path, pg_dsn: str) -> None:
    """The sync's backend is terminated (pg_terminate_backend) while its batch's transaction
    waits on a row another session holds, after its COPY and deletes ran: nothing of the
    batch is kept, the error says the connection was lost, the next run converges."""
    from lokal.errors import CentralUnreachable

    ix = make_index(tmp_path / "a.db", 30)
    sync(ix, pg_dsn, "a")
    ix.replace_document("/docs/10.txt", [Chunk("ten again", ordinal=0)], vecs(1, 3))
    ix.delete_document("/docs/20.txt")
    applied_before = central_rows(pg_dsn)
    errors: list[BaseException] = []
    with psycopg.connect(pg_dsn) as holder, psycopg.connect(pg_dsn, autocommit=True) as killer:
        holder.execute("SELECT 1 FROM lokal.chunks WHERE chunk_id = '/docs/10.txt#0' FOR UPDATE")

        def run() -> None:
            try:
                sync(ix, pg_dsn, "a")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        pid = None
        for _ in range(600):  # until the sync's upsert waits for the held row
            row = killer.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'lokal' "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row:
                pid = row[0]
                break
            time.sleep(0.05)
        assert pid is not None, "the sync never waited on the held row"
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        t.join()
        holder.rollback()
    assert len(errors) == 1 and isinstance(errors[0], CentralUnreachable), errors
    assert "connection" in str(errors[0])
    assert_same(central_rows(pg_dsn), applied_before)  # the batch left no trace
    r = sync(ix, pg_dsn, "a")
    assert r.sent == 20  # 10.txt: 1 upsert + 9 deletes; 20.txt: 10 deletes
    assert_same(central_rows(pg_dsn), expected_rows(ix, "a"))
    ix.close()


def test_a_rebuilt_index_replaces_the_sites_rows_once_complete(tmp_path: Path, pg_dsn: str) -> None:
    ix = make_index(tmp_path / "a.db", 30)
    sync(ix, pg_dsn, "a")
    ix.close()
    (tmp_path / "a.db").unlink()
    rebuilt = make_index(tmp_path / "a.db", 12, seed=5)
    seen: list[int] = []

    def progress(done: int, total: int) -> None:  # the old rows serve until the swap
        seen.append(len(central_rows(pg_dsn, "a")))

    r = sync(rebuilt, pg_dsn, "a", batch_size=5, progress=progress)
    assert r.replaced and set(seen) == {30}
    assert_same(central_rows(pg_dsn), expected_rows(rebuilt, "a"))
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lokal.staging").fetchone()[0] == 0
    rebuilt.close()


def test_a_restored_old_snapshot_converges(tmp_path: Path, pg_dsn: str) -> None:
    """The box's index is restored from a copy older than what the centre applied, then
    written again: the sync sees the history does not continue and replaces the site's rows
    with what the restored index holds."""
    ix = make_index(tmp_path / "a.db", 20)
    sync(ix, pg_dsn, "a")
    ix.snapshot(tmp_path / "backup.db")
    ix.replace_document("/docs/0.txt", [Chunk("after the backup", ordinal=0)], vecs(1, 8))
    ix.replace_document("/docs/30.txt", [Chunk("new after the backup")], vecs(1, 9))
    sync(ix, pg_dsn, "a")
    ix.close()
    os.replace(tmp_path / "backup.db", tmp_path / "a.db")  # the restore
    restored = Index.open(tmp_path / "a.db", IDENTITY, writable=True)
    assert restored.last_seq < 22
    r = sync(restored, pg_dsn, "a")  # behind what the centre applied
    assert r.replaced
    assert_same(central_rows(pg_dsn), expected_rows(restored, "a"))
    sync(restored, pg_dsn, "a")
    for i in range(4):  # written again past the applied seq: its changes there differ
        restored.replace_document(f"/docs/r{i}.txt", [Chunk(f"r{i}")], vecs(1, 20 + i))
    r = sync(restored, pg_dsn, "a")
    assert not r.replaced and r.sent == 4
    assert_same(central_rows(pg_dsn), expected_rows(restored, "a"))
    restored.close()


def test_the_cli_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    with make_index(tmp_path / "a.db", 1):
        pass
    proc = subprocess.run(
        [
            LOKAL,
            "sync",
            "--index",
            str(tmp_path / "a.db"),
            "--site",
            "a",
            "--to",
            "postgresql://box:secret@central/fleet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "contains a password" in proc.stderr and "Traceback" not in proc.stderr


def test_bundles_applied_twice_and_out_of_order(tmp_path: Path, pg_dsn: str) -> None:
    from lokal.central.bundle import apply_bundle, write_bundle

    ix = make_index(tmp_path / "a.db", 20)
    b1 = write_bundle(ix, tmp_path / "1.lokalbundle", "a")
    assert b1 is not None and b1.replace and b1.number == 1 and b1.count == 20
    assert write_bundle(ix, tmp_path / "none.lokalbundle", "a") is None  # nothing new
    assert not (tmp_path / "none.lokalbundle").exists()
    ix.replace_document("/docs/0.txt", [Chunk("two", ordinal=0)], vecs(1, 2))
    b2 = write_bundle(ix, tmp_path / "2.lokalbundle", "a")
    ix.delete_document("/docs/10.txt")
    b3 = write_bundle(ix, tmp_path / "3.lokalbundle", "a")
    assert b2 and b3 and not b2.replace and b3.after == b2.last and b2.after == b1.last

    with pytest.raises(BundleError, match=rf"holds nothing.*changes 1-{b2.after} are missing"):
        apply_bundle(tmp_path / "2.lokalbundle", pg_dsn)
    assert apply_bundle(tmp_path / "1.lokalbundle", pg_dsn).status == "applied"
    with pytest.raises(BundleError, match=rf"changes {b1.last + 1}-{b2.last} are missing"):
        apply_bundle(tmp_path / "3.lokalbundle", pg_dsn)
    assert apply_bundle(tmp_path / "2.lokalbundle", pg_dsn).status == "applied"
    assert apply_bundle(tmp_path / "3.lokalbundle", pg_dsn).status == "applied"
    rows = central_rows(pg_dsn)
    for name in ("1", "2", "3", "1"):  # again: no-ops
        r = apply_bundle(tmp_path / f"{name}.lokalbundle", pg_dsn)
        assert (r.status, r.applied) == ("already applied", 0)
    assert_same(central_rows(pg_dsn), rows)
    assert_same(rows, expected_rows(ix, "a"))

    # a damaged bundle is refused before anything is applied
    data = bytearray((tmp_path / "3.lokalbundle").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.lokalbundle").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"damaged|not a lokal bundle"):
        apply_bundle(tmp_path / "bad.lokalbundle", pg_dsn)
    ix.close()


def test_a_bundle_from_a_restored_copy_is_a_new_generation(tmp_path: Path, pg_dsn: str) -> None:
    from lokal.central.bundle import apply_bundle, write_bundle

    ix = make_index(tmp_path / "a.db", 10)
    ix.snapshot(tmp_path / "backup.db")
    write_bundle(ix, tmp_path / "1.lokalbundle", "a")
    ix.replace_document("/docs/new.txt", [Chunk("new")], vecs(1, 4))
    write_bundle(ix, tmp_path / "2.lokalbundle", "a")
    for n in (1, 2):
        apply_bundle(tmp_path / f"{n}.lokalbundle", pg_dsn)
    generation = ix.generation
    ix.close()
    os.replace(tmp_path / "backup.db", tmp_path / "a.db")
    with Index.open(tmp_path / "a.db", IDENTITY, writable=True) as restored:
        restored.replace_document("/docs/other.txt", [Chunk("other")], vecs(1, 5))
        b3 = write_bundle(restored, tmp_path / "3.lokalbundle", "a")
        assert b3 is not None and b3.replace and b3.after == 0
        assert restored.generation == b3.generation != generation
        assert apply_bundle(tmp_path / "3.lokalbundle", pg_dsn).status == "applied"
        assert_same(central_rows(pg_dsn), expected_rows(restored, "a"))
    # the old generation's bundles are obsolete now
    assert apply_bundle(tmp_path / "2.lokalbundle", pg_dsn).status == "obsolete"
    assert apply_bundle(tmp_path / "1.lokalbundle", pg_dsn).status == "obsolete"


def _site_state(dsn: str, site: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT generation, applied_seq, (SELECT count(*) FROM lokal.chunks WHERE site = %s) "
            "FROM lokal.sites WHERE site = %s",
            (site, site),
        ).fetchone()


def test_a_bundle_whose_header_is_edited_is_refused(tmp_path: Path, pg_dsn: str) -> None:
    """The digest covers the header too: a bundle of site a relabelled as site b (or as any
    other range) is refused, applied or not, and nothing of it reaches the centre."""
    import sqlite3

    from lokal.central.bundle import apply_bundle, read_info, write_bundle

    ix = make_index(tmp_path / "a.db", 20)
    write_bundle(ix, tmp_path / "1.lokalbundle", "a")
    ix.close()

    def edited(name: str, key: str, value: object) -> Path:
        out = tmp_path / f"{name}.lokalbundle"
        out.write_bytes((tmp_path / "1.lokalbundle").read_bytes())
        with sqlite3.connect(out) as conn:
            conn.execute("UPDATE header SET value = ? WHERE key = ?", (json.dumps(value), key))
        conn.close()
        return out

    for path in (edited("to-b", "site", "b"), edited("later", "number", 7)):
        with pytest.raises(BundleError, match="do not match their checksum"):
            read_info(path)
        with pytest.raises(BundleError, match="do not match their checksum"):
            apply_bundle(path, pg_dsn)
    assert _site_state(pg_dsn, "b") in (None, (None, 0, 0))
    assert apply_bundle(tmp_path / "1.lokalbundle", pg_dsn).status == "applied"
    with pytest.raises(BundleError, match="do not match their checksum"):  # even a no-op
        apply_bundle(edited("again", "created_at", 0.0), pg_dsn)


def test_a_bundle_row_without_its_vector_is_a_damaged_bundle(tmp_path: Path, pg_dsn: str) -> None:
    import sqlite3

    from lokal.central.bundle import apply_bundle, write_bundle

    with make_index(tmp_path / "a.db", 10) as ix:
        write_bundle(ix, tmp_path / "1.lokalbundle", "a")
    with sqlite3.connect(tmp_path / "1.lokalbundle") as conn:
        conn.execute("UPDATE changes SET embedding = NULL WHERE seq = 5")
    conn.close()
    with pytest.raises(BundleError, match="damaged bundle: change 5 is neither an upsert"):
        apply_bundle(tmp_path / "1.lokalbundle", pg_dsn)
    assert _site_state(pg_dsn, "a") == (None, 0, 0)


def test_a_format_1_bundle_still_applies_with_its_rows_checked(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles written before the digest covered the header (lokal-bundle/1: the rows' digest
    alone) may still be on their way from a site: they apply, their rows checked."""
    from lokal.central import bundle

    ix = make_index(tmp_path / "a.db", 10)
    with monkeypatch.context() as m:
        m.setattr(bundle, "FORMAT", bundle.FORMAT_1)
        bundle.write_bundle(ix, tmp_path / "old.lokalbundle", "a")
    data = bytearray((tmp_path / "old.lokalbundle").read_bytes())
    at = data.index(b"doc 0 chunk 3 seed 0")
    data[at] = ord("X")
    (tmp_path / "bad.lokalbundle").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="do not match their checksum"):
        bundle.apply_bundle(tmp_path / "bad.lokalbundle", pg_dsn)
    assert bundle.apply_bundle(tmp_path / "old.lokalbundle", pg_dsn).status == "applied"
    assert_same(central_rows(pg_dsn, "a"), expected_rows(ix, "a"))
    ix.close()


def test_a_bundle_changed_while_it_is_applied_is_not_applied_partly(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applying hashes the rows it applies, from one read of the file: bytes changed on disk
    after the header was read (here: as the first row is applied) end in BundleError and a
    rolled-back transaction, not in the changed rows at the centre."""
    from lokal.central import bundle

    ix = make_index(tmp_path / "a.db", 30)
    path = tmp_path / "1.lokalbundle"
    bundle.write_bundle(ix, path, "a")
    ix.close()
    original = path.read_bytes()
    needle = b"doc 20 chunk 9 seed 0"
    assert original.count(needle) == 1
    real = bundle.apply_changes

    def tamper_then_apply(*args: Any, **kwargs: Any) -> int:
        with open(path, "r+b") as f:  # not through SQLite: its locks would not stop this
            f.seek(original.index(needle))
            f.write(b"XXX" + needle[3:])
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(bundle, "apply_changes", tamper_then_apply)
        with pytest.raises(BundleError, match="damaged"):
            bundle.apply_bundle(path, pg_dsn)
    assert _site_state(pg_dsn, "a") == (None, 0, 0)  # registered, nothing applied
    path.write_bytes(original)
    assert bundle.apply_bundle(path, pg_dsn).status == "applied"
    texts = {row[2] for row in central_rows(pg_dsn, "a").values()}
    assert len(texts) == 30 and needle.decode() in texts


def _run_sync_and_kill(args: list[str], rng: random.Random) -> int | None:
    """Start the real `lokal sync`, kill -9 it after a random number of its progress lines
    (0: before its first batch) and a random few milliseconds; None if it finished first."""
    proc = subprocess.Popen(
        [LOKAL, "sync", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    wanted = rng.randint(0, 4)
    seen = 0
    killed = False
    for line in proc.stderr:
        if '"progress"' in line:
            seen += 1
            if seen > wanted:
                time.sleep(rng.uniform(0, 0.03))
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
    proc.stderr.close()
    code = proc.wait()
    return code if not killed else None


@pytest.mark.slow
def test_kill_9_at_random_moments_then_convergence(tmp_path: Path, pg_dsn: str) -> None:
    """20 runs of the real `lokal sync` killed with SIGKILL at random moments (seeded), over
    three sites whose indexes change between runs (one is rebuilt: a new generation, staged
    and swapped); then one full run per site: the centre holds, row for row, the union of
    the sites' indexes."""
    rng = random.Random(1414)
    sites = {f"k{i}": make_index(tmp_path / f"k{i}.db", 120, seed=i) for i in range(3)}
    kills = 0
    for round_ in range(20):
        site = rng.choice(sorted(sites))
        ix = sites[site]
        if round_ == 9:  # a rebuild: a new file, a new generation
            ix.close()
            (tmp_path / f"{site}.db").unlink()
            ix = sites[site] = make_index(tmp_path / f"{site}.db", 90, seed=40)
        else:
            d = rng.randrange(0, 120, 10)
            n = rng.randint(0, 12)
            ix.replace_document(
                f"/docs/{d}.txt",
                [Chunk(f"round {round_} {i}", ordinal=i) for i in range(n)],
                vecs(n, 100 + round_),
            )
        args = ["--index", str(ix.path), "--site", site, "--to", pg_dsn, "--batch-size", "8"]
        if _run_sync_and_kill(args, rng) is None:
            kills += 1
    assert kills >= 15
    for site, ix in sites.items():
        done = subprocess.run(
            [LOKAL, "sync", "--index", str(ix.path), "--site", site, "--to", pg_dsn, "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    want: dict = {}
    for site, ix in sites.items():
        want |= expected_rows(ix, site)
    assert_same(central_rows(pg_dsn), want)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lokal.staging").fetchone()[0] == 0
    for ix in sites.values():
        ix.close()


@pytest.mark.slow
def test_an_index_built_by_lokal_index_syncs_with_the_cli_and_searches_centrally(
    tmp_path: Path, pg_dsn: str, packed_gguf: Path, gguf_embedder: Any
) -> None:
    """The whole path with real embeddings: `lokal index` builds the index, the admin runs
    `lokal central init` and `add-site`, the box runs `lokal sync` with the role and password
    file it was given; a nearest-neighbour query at the centre finds the right document."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text(
        "# Pump P-101\n\nTo reset the pump after a trip, close the discharge valve, press the "
        "reset button for five seconds and restart the motor from the panel.\n"
    )
    (docs / "valve.txt").write_text(
        "Valve V-7 inspection: check the packing for leaks every month and grease the stem.\n"
    )
    db = tmp_path / "index.db"

    def lokal(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc

    lokal("index", str(docs), "--index", str(db), "--json")
    lokal("central", "init", pg_dsn, "--index", str(db))
    out = lokal(
        "central", "add-site", "plant-a", "--url", pg_dsn, "--password-out", str(tmp_path / "pw")
    ).stdout
    assert "lokal_site_plant-a" in out and (tmp_path / "pw").stat().st_mode & 0o077 == 0
    box_url = as_role(pg_dsn, "lokal_site_plant-a")
    synced = lokal(
        "sync",
        "--index",
        str(db),
        "--site",
        "plant-a",
        "--to",
        box_url,
        "--password-file",
        str(tmp_path / "pw"),
        "--json",
    )
    result = json.loads(synced.stdout)
    with Index.open(db) as ix:
        assert result["sent"] == len(ix) > 0 and result["applied_seq"] == ix.last_seq
        assert_same(central_rows(pg_dsn), expected_rows(ix, "plant-a"))
    assert '"progress"' in synced.stderr  # piped: progress as JSON lines
    q = gguf_embedder.embed_query("how do I reset the pump?")
    with psycopg.connect(pg_dsn) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        path = conn.execute(
            "SELECT path FROM lokal.chunks ORDER BY embedding <=> %s LIMIT 1", (np.asarray(q),)
        ).fetchone()[0]
        config = conn.execute(
            "SELECT value FROM lokal.meta WHERE key = 'text_search_config'"
        ).fetchone()[0]
    assert path == str(docs / "pump.md")
    assert config == "english"
    status = json.loads(lokal("central", "status", "--url", pg_dsn, "--json").stdout)
    assert [(s["site"], s["chunks"]) for s in status] == [("plant-a", result["sent"])]


def test_bundles_through_the_cli_are_applied_in_their_order(tmp_path: Path, pg_dsn: str) -> None:
    ix = make_index(tmp_path / "a.db", 10)

    def lokal(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc

    db = str(tmp_path / "a.db")
    lokal("sync", "--index", db, "--site", "a", "--to", str(tmp_path / "x1.lokalbundle"))
    ix.replace_document("/docs/0.txt", [Chunk("changed")], vecs(1, 1))
    lokal("sync", "--index", db, "--site", "a", "--to", str(tmp_path / "x2.lokalbundle"))
    out = lokal("sync", "--index", db, "--site", "a", "--to", str(tmp_path / "x3.lokalbundle"))
    assert "nothing changed" in out.stdout and not (tmp_path / "x3.lokalbundle").exists()
    applied = lokal(
        "sync",
        "--to",
        pg_dsn,
        "--json",
        "--from",
        str(tmp_path / "x2.lokalbundle"),
        str(tmp_path / "x1.lokalbundle"),
    )
    statuses = [(Path(r["path"]).name, r["status"]) for r in json.loads(applied.stdout)]
    assert statuses == [("x1.lokalbundle", "applied"), ("x2.lokalbundle", "applied")]
    assert_same(central_rows(pg_dsn), expected_rows(ix, "a"))
    ix.close()


def test_a_bundle_never_overwrites_one_not_yet_carried(tmp_path: Path) -> None:
    from lokal.central.bundle import write_bundle

    with make_index(tmp_path / "a.db", 5) as ix:
        write_bundle(ix, tmp_path / "b.lokalbundle", "a")
        assert (tmp_path / "b.lokalbundle").stat().st_mode & 0o007 == 0  # not world-readable
        ix.upsert([Chunk("more", id="more")], vecs(1))
        with pytest.raises(BundleError, match="already exists"):
            write_bundle(ix, tmp_path / "b.lokalbundle", "a")
        again = write_bundle(ix, tmp_path / "c.lokalbundle", "a")
        assert again is not None and again.number == 2 and again.count == 1


def test_an_index_replaced_during_a_sync_is_never_mixed(tmp_path: Path, pg_dsn: str) -> None:
    """The agent's rebuild renames a new file over the index while a sync reads it: the sync
    notices the new generation before applying anything of it under the old one, and sends
    the new file whole."""
    make_index(tmp_path / "a.db", 40).close()
    make_index(tmp_path / "new.db", 15, seed=9).close()
    reader = Index.open(tmp_path / "a.db")
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:  # after the first batch
            os.replace(tmp_path / "new.db", tmp_path / "a.db")

    r = sync(reader, pg_dsn, "a", batch_size=10, progress=progress)
    assert r.replaced
    with Index.open(tmp_path / "a.db") as now:
        assert reader.generation == now.generation
        assert_same(central_rows(pg_dsn), expected_rows(now, "a"))
    reader.close()


def test_a_rebuild_given_up_leaves_no_staged_rows(tmp_path: Path, pg_dsn: str) -> None:
    a = make_index(tmp_path / "a.db", 20)
    sync(a, pg_dsn, "s")
    b = make_index(tmp_path / "b.db", 30, seed=3)  # a rebuild, interrupted after one batch

    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(b, pg_dsn, "s", batch_size=10, progress=interrupt)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lokal.staging").fetchone()[0] == 10
    a.upsert([Chunk("still the old file", id="old")], vecs(1))  # the old index is back in use
    assert sync(a, pg_dsn, "s").sent == 1
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lokal.staging").fetchone()[0] == 0
        assert conn.execute("SELECT pending_generation FROM lokal.sites").fetchone()[0] is None
    assert_same(central_rows(pg_dsn), expected_rows(a, "s"))
    a.close()
    b.close()


def _role_exists(dsn: str, role: str) -> bool:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return found is not None


def test_remove_site_drops_its_role_or_says_why_it_stays(tmp_path: Path, pg_dsn: str) -> None:
    """`lokal central remove-site` (the real CLI) deletes the site's rows and drops the role
    lokal made for it; a role still needed elsewhere (rights in another collection) or given
    with --role loses this collection's rights and stays, and the command says why."""
    site = "retired-" + os.urandom(3).hex()  # roles are the server's: unique to this test
    with psycopg.connect(pg_dsn) as admin:
        schema.migrate(admin, "lokal", IDENTITY)
        schema.migrate(admin, "other", IDENTITY)
        role, password = schema.add_site(admin, "lokal", site)
        kept, _ = schema.add_site(admin, "lokal", "kept-" + site[8:])
        schema.add_site(admin, "other", "twin", role=kept)  # the same role, another collection
        custom, _ = schema.add_site(admin, "lokal", "own-" + site[8:], role="own_" + site[8:])
    with make_index(tmp_path / "a.db", 10) as ix:
        sync(ix, as_role(pg_dsn, role), site, password=password)
    env = {**os.environ, "PGPASSWORD": ""}

    def remove(name: str) -> str:
        proc = subprocess.run(
            [LOKAL, "central", "remove-site", name, "--url", pg_dsn],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return proc.stdout

    assert remove(site) == f"site {site} removed (10 chunks deleted); its role {role} dropped\n"
    assert not _role_exists(pg_dsn, role)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(as_role(pg_dsn, role), password=password).close()

    out = remove("kept-" + site[8:])
    assert f"its role {kept} kept: it still has rights or objects elsewhere" in out
    assert _role_exists(pg_dsn, kept)
    with psycopg.connect(pg_dsn) as conn:
        rights = conn.execute(
            "SELECT has_table_privilege(%s, 'lokal.chunks', 'INSERT'), "
            "has_table_privilege(%s, 'other.chunks', 'INSERT')",
            (kept, kept),
        ).fetchone()
    assert rights == (False, True)  # revoked here, kept for its other collection

    out = remove("own-" + site[8:])
    assert f"its role {custom} kept: it was given with --role" in out
    assert _role_exists(pg_dsn, custom)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f'DROP ROLE "{custom}"')  # what the note asks: nothing else holds it
        conn.execute("DROP OWNED BY " + f'"{kept}"')
        conn.execute(f'DROP ROLE "{kept}"')
