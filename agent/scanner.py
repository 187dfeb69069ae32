"""The scanner: which files under a root are the agent's to index.

Walks a root (symlinks followed only inside it, loops cut), leaves out what the exclude
patterns match (gitignore-style; :data:`DEFAULT_EXCLUDE` always), keeps only what the include
patterns match (when any), and yields each regular file's :class:`FileState` (size, times,
inode) for the pipeline (:mod:`lokal.agent.ingest`) to compare with the index.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict

from lokal.errors import MissingDependency


class ScanSettings(Protocol):
    """What the scanner reads of the pipeline's settings (:class:`lokal.agent.ingest.Settings`)."""

    @property
    def exclude(self) -> tuple[str, ...]: ...

    @property
    def include(self) -> tuple[str, ...]: ...

    @property
    def follow_symlinks(self) -> bool: ...


class StatFields(TypedDict):
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int


DEFAULT_EXCLUDE = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "node_modules/",
    ".venv/",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "*.tmp",
    "*.part",
    "*.crdownload",
    ".DS_Store",
)


@dataclass(frozen=True)
class FileState:
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path, st: os.stat_result) -> FileState:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def stat_fields(self) -> StatFields:
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
        }


class Patterns:
    """gitignore-style patterns (pathspec): ``dir/`` matches directories, ``*.swp`` any
    depth, ``/build`` the root only, ``**`` any directories, ``!keep`` re-includes."""

    def __init__(self, patterns: Sequence[str]) -> None:
        try:
            import pathspec
        except ImportError as exc:
            raise MissingDependency(extra="agent", feature="include/exclude patterns") from exc

        self._spec = pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None
        self._fast = combined_regex(self._spec.patterns) if self._spec else None

    def __bool__(self) -> bool:
        return self._spec is not None

    def match(self, rel: str, is_dir: bool) -> bool:
        path = rel + "/" if is_dir else rel
        if self._fast is not None:
            return self._fast.match(path) is not None
        return self._spec is not None and self._spec.match_file(path)


def combined_regex(patterns: Sequence[Any]) -> re.Pattern[str] | None:
    """Without negations any pattern that matches decides: one combined regex answers in a
    single pass (pathspec tries each pattern in turn; this halves a rescan's time). It reads
    pathspec's compiled patterns, which are not its public API: their one named group
    (``ps_d``) is made plain. Patterns of another shape (a negation, no regex, group names
    this does not know) give None, and pathspec's own matching is used."""
    used = [p for p in patterns if getattr(p, "include", None) is not None]
    if not used or not all(p.include and getattr(p, "regex", None) is not None for p in used):
        return None
    parts = [p.regex.pattern.replace("(?P<ps_d>", "(?:") for p in used]
    if any("(?P<" in x for x in parts):
        return None
    try:
        return re.compile("|".join(f"(?:{x})" for x in parts))
    except re.error:
        return None


def scan(
    root: Path,
    settings: ScanSettings,
    skip: set[Path],
    report: Callable[[Path, str], None],
    start: Path | None = None,
) -> Iterator[FileState]:
    """Regular files under ``root`` (or under ``start``, a directory inside it) that the
    settings admit; patterns are matched relative to ``root``. Symlinks are not followed unless
    ``follow_symlinks``; then directory loops are cut and nothing outside ``root`` is read."""
    real_root = root.resolve()
    visited: set[tuple[int, int]] = set()
    exclude, include = Patterns(settings.exclude), Patterns(settings.include)
    top = start or root
    if top != root:
        rel_top = top.relative_to(root).as_posix()
        parts = rel_top.split("/")
        if any(exclude.match("/".join(parts[: i + 1]), True) for i in range(len(parts))):
            return

    def onerror(exc: OSError) -> None:
        report(Path(exc.filename or top), f"cannot list directory: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(
        top, onerror=onerror, followlinks=settings.follow_symlinks
    ):
        here = Path(dirpath)
        try:
            st = here.stat()
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            report(here, "symlink loop: directory already visited")
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        if settings.follow_symlinks and not here.resolve().is_relative_to(real_root):
            report(here, "symlink pointing outside the root: not read")
            dirnames[:] = []
            continue
        rel_dir = here.relative_to(root).as_posix()
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir != "." else d
            if not exclude.match(rel, True):
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            rel = f"{rel_dir}/{name}" if rel_dir != "." else name
            state = admit(path, rel, settings, skip, exclude, include, real_root, report)
            if state is not None:
                yield state


def admit(
    path: Path,
    rel: str,
    settings: ScanSettings,
    skip: set[Path],
    exclude: Patterns,
    include: Patterns,
    real_root: Path,
    report: Callable[[Path, str], None],
) -> FileState | None:
    """The file's state if the settings admit it as a regular file to index, else None."""
    if path in skip or exclude.match(rel, False):
        return None
    if include and not include.match(rel, False):
        return None
    try:
        lst = path.lstat()
        if stat.S_ISLNK(lst.st_mode):
            if not settings.follow_symlinks:
                return None
            target = path.resolve(strict=True)
            if not target.is_relative_to(real_root):
                report(path, "symlink pointing outside the root: not read")
                return None
            lst = path.stat()
        if not stat.S_ISREG(lst.st_mode):
            return None
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as exc:  # RuntimeError: resolve() on a link loop
        report(path, f"cannot stat: {exc}")
        return None
    return FileState.of(path, lst)
