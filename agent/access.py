"""Who may read an index the agent (or ``lokal index``) writes: one rule, used by both.

- A directory lokal creates for the index gets mode 2750 and the group (``lokal`` by default,
  when it exists): group members may read, no one else; setgid, so files created in it later
  get the group too.
- A directory that already exists is never changed (it may be ``/tmp``, or a directory the
  operator set up on purpose): it is checked, and what would stop the group from reading, or let
  anyone else replace the index, is reported.
- The index file and its -wal and -shm get the group and mode 0640 (SQLite's read-only readers
  need to read the -wal and -shm of a WAL database).
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from contextlib import suppress
from pathlib import Path

log = logging.getLogger("lokal.agent")

DEFAULT_GROUP = "lokal"
DIRECTORY_MODE = 0o2750
FILE_MODE = 0o640
INDEX_FILES = ("", "-wal", "-shm")


def group_id(group: str | None) -> int | None:
    """The id of ``group``, or None when it is not set or does not exist."""
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def prepare_directory(directory: Path, group: str | None) -> list[str]:
    """Create the index's directory (mode 2750, the group) if it is missing; check an existing
    one without changing it. Returns the problems found (each is also logged)."""
    gid = group_id(group)
    if group and gid is None and group != DEFAULT_GROUP:
        log.warning("group %r does not exist: the index is readable by its owner only", group)
    try:
        os.mkdir(directory, 0o750)
    except FileExistsError:
        problems = directory_problems(directory, group)
        for p in problems:  # the group's reach is the operator's choice; a shared dir is not
            log.log(logging.WARNING if "every user" in p else logging.INFO, "%s", p)
        return problems
    except FileNotFoundError:
        directory.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        return prepare_directory(directory, group)
    if gid is not None:
        try:
            os.chown(directory, -1, gid)
            os.chmod(directory, DIRECTORY_MODE)
        except PermissionError as exc:
            log.warning("cannot give %s to group %s: %s", directory, group, exc)
    return []


def directory_problems(directory: Path, group: str | None) -> list[str]:
    """What is wrong with an existing index directory, for the index and its group."""
    try:
        st = directory.stat()
    except OSError as exc:
        return [f"index directory {directory}: cannot read it: {exc.strerror or exc}"]
    if not stat.S_ISDIR(st.st_mode):
        return [f"index directory {directory} is not a directory"]
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o002:
        sticky = " (sticky: others cannot delete it, but may fill it)" if mode & 0o1000 else ""
        problems.append(
            f"index directory {directory} is writable by every user (mode {mode:04o}){sticky}: "
            "give the index a directory of its own (lokal creates it 2750 when it is missing)"
        )
    gid = group_id(group)
    if gid is not None:
        reach = mode & (0o010 if st.st_gid == gid else 0o001)
        if not reach:
            problems.append(
                f"index directory {directory} (mode {mode:04o}, group "
                f"{_group_name(st.st_gid)}) does not let group {group} reach the index"
            )
    return problems


def share_with_group(index: Path, group: str | None) -> None:
    """The index file, -wal and -shm: the group (when it exists) and mode 0640."""
    gid = group_id(group)
    for suffix in INDEX_FILES:
        p = Path(f"{index}{suffix}")
        with suppress(FileNotFoundError, PermissionError):
            if gid is not None and p.stat().st_gid != gid:
                os.chown(p, -1, gid)
            os.chmod(p, FILE_MODE)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
