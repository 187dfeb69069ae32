"""The agent's ``[sync]`` section: push the index to the central store in the background.

A thread beside the indexing loop, with its own read-only handle on the index (indexing never
waits for it): every ``interval`` seconds it runs :func:`lokal.central.sync.sync`; while the
centre is unreachable (or refuses) it retries with a growing pause, up to ``max(interval,
300)`` seconds. It stops with the agent's stop Event, between two batches (each batch is one
transaction at the centre, so stopping loses nothing), and the agent joins it.

What it last did goes to ``INDEX.sync.json`` beside the index; ``lokal agent status`` reads it
and counts the changes the centre has not applied yet (the lag).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: first pause after a failure (seconds); it doubles up to max(interval, MAX_BACKOFF_S)
FIRST_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class SyncConfig:
    """The ``[sync]`` section of agent.toml (see agent/agent.toml)."""

    url: str
    site: str
    interval: float = 60.0
    password_file: Path | None = None
    password_env: str | None = None
    schema: str = "lokal"
    batch_size: int = 1000

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["password_file"] = str(self.password_file) if self.password_file else None
        return out


def status_path(index: Path) -> Path:
    return index.with_name(index.name + ".sync.json")


class _Stopped(Exception):
    pass


class Pusher(threading.Thread):
    """Runs ``sync`` now and then until ``stop`` is set."""

    def __init__(self, index: Path, config: SyncConfig, stop: threading.Event) -> None:
        super().__init__(name="lokal-sync", daemon=False)
        self.index_path = index
        self.config = config
        self.stop = stop
        self.failures = 0
        self.state: dict[str, Any] = {
            "url": _redact(config.url),
            "site": config.site,
            "schema": config.schema,
            "generation": None,
            "applied_seq": None,
            "last_success": None,
            "last_attempt": None,
            "last_error": None,
            "failures": 0,
        }

    def run(self) -> None:
        from lokal.index import Index

        index = None
        try:
            while not self.stop.is_set():
                try:
                    if index is None:
                        index = Index.open(self.index_path)
                    self._push(index)
                    self.failures = 0
                    pause = self.config.interval
                except _Stopped:
                    break
                except Exception as exc:  # any failure: recorded, retried later, never fatal
                    if index is not None:  # reopened next time (the file may have been replaced)
                        index.close()
                        index = None
                    self.failures += 1
                    pause = min(
                        FIRST_BACKOFF_S * 2 ** (self.failures - 1),
                        max(self.config.interval, MAX_BACKOFF_S),
                    )
                    self.state.update(
                        last_error=f"{type(exc).__name__}: {exc}", failures=self.failures
                    )
                    self._save()
                    log.warning(
                        "sync to %s failed (%s: %s); next try in %.0f s",
                        self.state["url"],
                        type(exc).__name__,
                        exc,
                        pause,
                    )
                self.stop.wait(pause)
        finally:
            if index is not None:
                index.close()

    def _push(self, index: Any) -> None:
        from lokal.central.connect import check_url, read_password
        from lokal.central.sync import sync

        cfg = self.config
        self.state["last_attempt"] = time.time()
        check_url(cfg.url, "[sync] url")
        password = read_password(cfg.password_file, cfg.password_env)

        def progress(done: int, total: int) -> None:
            if self.stop.is_set():
                raise _Stopped

        result = sync(
            index,
            cfg.url,
            cfg.site,
            schema_name=cfg.schema,
            password=password,
            batch_size=cfg.batch_size,
            progress=progress,
        )
        self.state.update(
            generation=result.generation,
            applied_seq=result.applied_seq,
            last_success=time.time(),
            last_error=None,
            failures=0,
        )
        self._save()
        if result.sent:
            log.info(
                "sync: %d changes sent to %s (site %s)%s",
                result.sent,
                self.state["url"],
                cfg.site,
                ", a new generation swapped in" if result.replaced else "",
            )

    def _save(self) -> None:
        path = status_path(self.index_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1), encoding="utf-8")
        os.replace(tmp, path)


def start(index: Path, config: SyncConfig | None, stop: threading.Event) -> Pusher | None:
    """Start the pusher for the agent's ``[sync]`` section (None without one)."""
    if config is None:
        return None
    pusher = Pusher(index, config, stop)
    pusher.start()
    log.info(
        "sync: pushing to %s as site %s every %.0f s",
        pusher.state["url"],
        config.site,
        config.interval,
    )
    return pusher


def read_status(index: Path) -> dict[str, Any] | None:
    """The pusher's last word, and how many changes the centre has not applied (``behind``:
    None when it never synced this generation of the index)."""
    from lokal.index import Index

    try:
        state = json.loads(status_path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from lokal.errors import LokalError

    behind = None
    try:
        with Index.open(index) as ix:
            if state.get("generation") == ix.generation and state.get("applied_seq") is not None:
                behind = ix.count_changes(int(state["applied_seq"]))
            else:
                behind = ix.count_changes(0)
    except LokalError as exc:
        log.debug("sync lag unknown: %s", exc)
    state["behind"] = behind
    return dict(state)


def _redact(url: str) -> str:
    from lokal.central.connect import redact

    return redact(url)
