"""One writer process and reader processes on the same index file, at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lokal.identity import ModelIdentity
from lokal.index import Index

IDENTITY = ModelIdentity("synthetic", "s" * 64, "mean", True, 384, "", "gguf", "q8_0", "f", "")

WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from lokal.identity import ModelIdentity
    from lokal.index import Chunk, Index
    path, rounds = sys.argv[1], int(sys.argv[3])
    identity = ModelIdentity.from_dict(json.loads(sys.argv[2]))
    rng = np.random.default_rng(1)
    def unit(n):  # the identity says the model normalizes: unit vectors, as it would give
        v = rng.normal(size=(n, 384))
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    with Index.open(path, identity, writable=True) as index:
        for version in range(rounds):
            parts = version % 7 + 1
            chunks = [Chunk(f"version {version} part {j}", ordinal=j,
                            metadata={"version": version, "parts": parts}) for j in range(parts)]
            index.replace_document("doc.txt", chunks, unit(parts))
            index.upsert([Chunk(f"loose {version}", id=f"loose{version % 13}",
                                metadata={"version": version})], unit(1))
    print("writer done")
""")

READER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from lokal.index import Index
    path, seconds = sys.argv[1], float(sys.argv[2])
    rng = np.random.default_rng(2)
    deadline = time.monotonic() + seconds
    reads = 0
    seen = set()
    with Index.open(path) as index:
        while time.monotonic() < deadline:
            chunks = index.document_chunks("doc.txt")
            if chunks:
                versions = {c.metadata["version"] for c in chunks}
                parts = chunks[0].metadata["parts"]
                seen.add(chunks[0].metadata["version"])
                if len(versions) != 1 or len(chunks) != parts:
                    print("HALF-WRITTEN", versions, len(chunks), parts)
                    sys.exit(1)
                hits = index.search(rng.normal(size=384), k=3, filter={"parts": parts})
                assert all(h.metadata["parts"] == parts for h in hits)
            reads += 1
    print(json.dumps({"reads": reads, "versions_seen": len(seen)}))
""")


@pytest.mark.slow
def test_readers_never_blocked_and_never_see_half_a_document(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    Index.create(path, IDENTITY).close()
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "reader.py").write_text(READER)
    identity = json.dumps(IDENTITY.to_dict())
    readers = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "reader.py"), str(path), "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    writer = subprocess.run(
        [sys.executable, str(tmp_path / "writer.py"), str(path), identity, "150"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    outputs = [r.communicate(timeout=300) for r in readers]
    assert writer.returncode == 0, writer.stderr
    for (out, err), reader in zip(outputs, readers, strict=True):
        assert reader.returncode == 0, out + err
        assert "locked" not in err
        stats = json.loads(out.strip().splitlines()[-1])
        # the reader really overlapped the writer: it saw the document change under it
        assert stats["reads"] > 10 and stats["versions_seen"] > 3, stats
    with Index.open(path) as index:
        report = index.check()
        assert report.ok, report.problems
        assert len(index.document_chunks("doc.txt")) == 149 % 7 + 1
