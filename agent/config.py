"""The agent's configuration: one TOML file, checked before anything runs.

Every key is optional except ``index`` and ``roots``; an unknown key, a wrong type or an
out-of-range value is an error that names the key (and the line, where the TOML parser gives
one). Relative paths are taken from the config file's directory. Example: ``agent/agent.toml``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

from lokal.agent.ingest import Settings
from lokal.agent.pusher import SyncConfig
from lokal.agent.scanner import DEFAULT_EXCLUDE
from lokal.errors import LokalError


class ConfigError(LokalError):
    """The agent's configuration file is missing, malformed or has a bad value."""


#: key -> (type or types, description) of every key the file may have
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "index": ((str,), "path of the index file the agent writes"),
    "roots": ((list,), "directories to watch (a list of paths)"),
    "model": ((str,), "a packed .gguf, a model name in lokal's cache, or 'default'"),
    "include": ((list,), "gitignore-style patterns a file must match (default: all files)"),
    "exclude": ((list,), "gitignore-style patterns left out, added to lokal's defaults"),
    "chunk_tokens": ((int,), "tokens per chunk, prefix included (default: the context)"),
    "overlap": ((int,), "tokens shared by neighbouring chunks"),
    "max_file_bytes": ((int,), "files larger than this are recorded as skipped"),
    "max_file_seconds": ((int, float), "files not parsed, chunked and embedded by then fail"),
    "follow_symlinks": ((bool,), "follow symbolic links (loops cut; never outside the roots)"),
    "polling": ((str, bool), "'auto', true (always poll) or false (never poll)"),
    "poll_interval": ((int, float), "seconds between polls when polling"),
    "rescan_interval": ((int, float), "seconds between full rescans (0: never)"),
    "quiet_period": ((int, float), "seconds a file must be left alone before it is read"),
    "threads": ((int,), "CPU threads for embedding (default: all cores)"),
    "batch_chunks": ((int,), "chunks embedded together before they are written"),
    "group": ((str,), "group given read access to the index (default 'lokal', if it exists)"),
    "sync": ((dict,), "a [sync] table: push the index to a central PostgreSQL store"),
}

#: keys of the [sync] table
SYNC_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "url": ((str,), "the central store, postgresql://user@host/db (no password in it)"),
    "site": ((str,), "this box's site name (lower case)"),
    "interval": ((int, float), "seconds between pushes"),
    "password_file": ((str,), "file whose first line is the password"),
    "password_env": ((str,), "environment variable holding the password"),
    "schema": ((str,), "the central collection (PostgreSQL schema), default 'lokal'"),
    "batch_size": ((int,), "changes per transaction at the centre"),
}


@dataclass(frozen=True)
class AgentConfig:
    index: Path
    roots: tuple[Path, ...]
    model: str = "default"
    settings: Settings = field(default_factory=Settings)
    polling: str = "auto"  # "auto" | "always" | "never"
    poll_interval: float = 2.0
    rescan_interval: float = 3600.0
    quiet_period: float = 1.0
    threads: int | None = None
    group: str | None = "lokal"
    sync: SyncConfig | None = None
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": str(self.index),
            "roots": [str(r) for r in self.roots],
            "model": self.model,
            "polling": self.polling,
            "rescan_interval": self.rescan_interval,
            "quiet_period": self.quiet_period,
            "threads": self.threads,
            "sync": self.sync.to_dict() if self.sync else None,
            "config": str(self.source) if self.source else None,
        }


def load(path: str | Path) -> AgentConfig:
    """Read and check an agent config file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        msg = f"{p}: no such config file"
        raise ConfigError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{p}: cannot read the config file: {exc}"
        raise ConfigError(msg) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        msg = f"{p}: not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    return from_dict(data, base=p.resolve().parent, source=p)


def from_dict(data: dict[str, Any], *, base: Path, source: Path | None = None) -> AgentConfig:
    where = f"{source}: " if source else ""

    def bad(key: str, why: str) -> NoReturn:
        msg = f"{where}key {key!r}: {why}"
        raise ConfigError(msg)

    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        known = ", ".join(KEYS)
        bad(unknown[0], f"unknown key (known keys: {known})")
    for key, value in data.items():
        types, what = KEYS[key]
        # bool is an int in Python: refuse true/false where a number is wanted
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            bad(key, f"must be {names} ({what}), got {value!r}")
    for key in ("index", "roots"):
        if key not in data:
            msg = f"{where}missing key {key!r}: {KEYS[key][1]}"
            raise ConfigError(msg)

    def path(value: str) -> Path:
        return (base / Path(value).expanduser()).resolve()

    def strings(key: str) -> tuple[str, ...]:
        items = data.get(key, [])
        if not all(isinstance(x, str) and x for x in items):
            bad(key, "must be a list of non-empty strings")
        return tuple(items)

    roots = strings("roots")
    if not roots:
        bad("roots", "give at least one directory")

    def positive(key: str, default: float, *, zero: bool = False) -> float:
        value = data.get(key, default)
        if value < 0 or (value == 0 and not zero):
            bad(key, f"must be {'>= 0' if zero else '> 0'}, got {value}")
        return float(value)

    polling = data.get("polling", "auto")
    if isinstance(polling, bool):
        polling = "always" if polling else "never"
    elif polling != "auto":
        bad("polling", f"must be 'auto', true or false, got {polling!r}")
    chunk_tokens = data.get("chunk_tokens")
    if chunk_tokens is not None and chunk_tokens < 16:
        bad("chunk_tokens", f"must be >= 16, got {chunk_tokens}")
    overlap = int(positive("overlap", 32, zero=True))
    if chunk_tokens is not None and overlap >= chunk_tokens // 2:
        bad("overlap", f"must be less than half of chunk_tokens ({chunk_tokens})")
    threads = data.get("threads")
    if threads is not None and threads < 1:
        bad("threads", f"must be >= 1, got {threads}")
    settings = Settings(
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        max_file_bytes=int(positive("max_file_bytes", Settings.max_file_bytes)),
        max_file_seconds=positive("max_file_seconds", Settings.max_file_seconds),
        exclude=(*DEFAULT_EXCLUDE, *strings("exclude")),
        include=strings("include"),
        follow_symlinks=bool(data.get("follow_symlinks", False)),
        batch_chunks=int(positive("batch_chunks", Settings.batch_chunks)),
    )
    return AgentConfig(
        index=path(data["index"]),
        roots=tuple(path(r) for r in roots),
        model=data.get("model", "default"),
        settings=settings,
        polling=polling,
        poll_interval=positive("poll_interval", 2.0),
        rescan_interval=positive("rescan_interval", 3600.0, zero=True),
        quiet_period=positive("quiet_period", 1.0, zero=True),
        threads=threads,
        group=data.get("group", "lokal"),
        sync=_sync_section(data["sync"], path, bad) if "sync" in data else None,
        source=source,
    )


def _sync_section(data: dict[str, Any], path: Any, bad: Any) -> SyncConfig:
    import re

    from lokal.central.connect import url_has_password

    if "password" in data:
        bad(
            "sync.password", "never put a password in the config: use password_file or password_env"
        )
    unknown = sorted(set(data) - set(SYNC_KEYS))
    if unknown:
        bad(f"sync.{unknown[0]}", f"unknown key (known keys: {', '.join(SYNC_KEYS)})")
    for key, value in data.items():
        types, what = SYNC_KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            bad(f"sync.{key}", f"must be {names} ({what}), got {value!r}")
    for key in ("url", "site"):
        if key not in data:
            bad(f"sync.{key}", f"missing: {SYNC_KEYS[key][1]}")
    url = data["url"]
    if not re.match(r"^postgres(ql)?://", url):
        bad("sync.url", f"must start with postgresql://, got {url[:40]!r}")
    if url_has_password(url):
        bad("sync.url", "contains a password: use password_file or password_env instead")
    if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,39}$", data["site"]):
        bad("sync.site", f"must be lower case letters, digits, '_', '.', '-', got {data['site']!r}")
    if "password_file" in data and "password_env" in data:
        bad("sync.password_env", "give password_file or password_env, not both")
    interval = data.get("interval", 60)
    if interval <= 0:
        bad("sync.interval", f"must be > 0, got {interval}")
    batch = data.get("batch_size", 1000)
    if batch < 1:
        bad("sync.batch_size", f"must be >= 1, got {batch}")
    return SyncConfig(
        url=url,
        site=data["site"],
        interval=float(interval),
        password_file=path(data["password_file"]) if "password_file" in data else None,
        password_env=data.get("password_env"),
        schema=data.get("schema", "lokal"),
        batch_size=int(batch),
    )
