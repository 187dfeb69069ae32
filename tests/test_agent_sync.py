"""The agent's [sync] section: the real agent pushes its index to a real PostgreSQL in the
background, keeps indexing while the centre is unreachable, and `lokal agent status` shows
the lag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lokal.agent import config as agent_config
from lokal.index import Index

from .test_agent_daemon import AgentProcess, lokal

pytest.importorskip("psycopg")

from .test_central_sync import assert_same, central_rows, expected_rows


def write_config(path: Path, sync: dict[str, object] | None, **values: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    if sync is not None:
        lines.append("[sync]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in sync.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"url": "postgresql://box@c/db", "site": "a", "password": "x"}, "'sync.password': never"),
        ({"url": "postgresql://box:pw@c/db", "site": "a"}, "'sync.url': contains a password"),
        ({"url": "postgresql://c/db?password=pw", "site": "a"}, "contains a password"),
        ({"url": "mysql://c/db", "site": "a"}, "'sync.url': must start with postgresql://"),
        ({"url": "postgresql://c/db"}, "'sync.site': missing"),
        ({"url": "postgresql://c/db", "site": "Plant A"}, "'sync.site': must be lower case"),
        ({"url": "postgresql://c/db", "site": "a", "interval": 0}, "'sync.interval': must be > 0"),
        ({"url": "postgresql://c/db", "site": "a", "tls": True}, "'sync.tls': unknown key"),
    ],
)
def test_a_bad_sync_section_is_refused_naming_the_key(
    tmp_path: Path, section: dict[str, object], message: str
) -> None:
    cfg = write_config(tmp_path / "a.toml", section, index="i.db", roots=["d"])
    with pytest.raises(agent_config.ConfigError, match=message):
        agent_config.load(cfg)


def test_a_good_sync_section(tmp_path: Path) -> None:
    section = {
        "url": "postgresql://box@c/db?sslmode=verify-full",
        "site": "plant-a",
        "password_file": "secret/pw",
        "interval": 30,
    }
    cfg = agent_config.load(write_config(tmp_path / "a.toml", section, index="i.db", roots=["d"]))
    assert cfg.sync is not None and cfg.sync.site == "plant-a" and cfg.sync.interval == 30
    assert cfg.sync.password_file == tmp_path / "secret" / "pw"


@pytest.mark.slow
def test_the_agent_pushes_in_the_background_and_status_shows_the_lag(
    tmp_path: Path, pg_dsn: str, packed_gguf: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump P-101\n\nHold the red button for five seconds.\n")
    db = tmp_path / "var" / "index.db"
    (tmp_path / "pw").write_text("not-checked-by-the-test-server\n")
    common = {
        "index": str(db),
        "roots": [str(docs)],
        "quiet_period": 0.4,
        "rescan_interval": 0,
        "model": str(packed_gguf),
    }

    # the centre unreachable: indexing goes on, the pusher backs off, status shows the error
    down = write_config(
        tmp_path / "down.toml",
        {"url": "postgresql://box@/db?host=/nonexistent", "site": "plant-a", "interval": 1},
        **common,
    )
    agent = AgentProcess(down)
    try:
        agent.wait_for(r"INFO idle:")
        agent.wait_for(r"sync to .* failed \(CentralUnreachable.*next try in 5 s")
        status = json.loads(lokal("agent", "status", "--config", str(down), "--json").stdout)
        assert status["sync"]["behind"] > 0 and "CentralUnreachable" in status["sync"]["last_error"]
        assert status["sync"]["last_success"] is None
    finally:
        assert agent.terminate() == 0  # the pusher stopped with the agent and was joined

    up = write_config(
        tmp_path / "up.toml",
        {"url": pg_dsn, "site": "plant-a", "interval": 0.5, "password_file": str(tmp_path / "pw")},
        **common,
    )
    agent = AgentProcess(up)
    try:
        agent.wait_for(r"sync: \d+ changes sent")
        m = agent.mark()
        (docs / "valve.txt").write_text("Valve V-7: grease the stem every month.\n")
        agent.idle_after(m)
        agent.wait_for(r"sync: \d+ changes sent", after=m)
        text = lokal("agent", "status", "--config", str(up)).stdout
        assert "sync: site plant-a" in text and "0 changes behind" in text, text
    finally:
        assert agent.terminate() == 0
    with Index.open(db) as ix:
        assert_same(central_rows(pg_dsn), expected_rows(ix, "plant-a"))
        assert {r.document for r in ix.get()} == {str(docs / "pump.md"), str(docs / "valve.txt")}
