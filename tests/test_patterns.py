"""Include/exclude patterns: gitignore semantics (pathspec), answered by one combined regex
when no pattern negates; the answers must be pathspec's own."""

from __future__ import annotations

import itertools

import pathspec
import pytest

from lokal.agent.scanner import DEFAULT_EXCLUDE, Patterns

PATHS = [
    "a.txt",
    "notes.swp",
    "deep/er/notes.swp",
    ".git",
    "src/.git",
    "x/.git/objects/ab",
    "build",
    "build/out.o",
    "src/build/out.o",
    "node_modules/pkg/index.js",
    "docs/#draft.md#",
    "docs/.#lock",
    "report.tmp",
    "a/b/c/d.md",
    "drafts/plan.md",
    "keep.swp",
    "x.log",
    "logs/x.log.1",
    "weird [name].md",
    "ünïcode/ファイル.txt",
]
PATTERN_SETS = [
    list(DEFAULT_EXCLUDE),
    ["/build", "drafts/", "*.log", "**/c/*.md"],
    ["*.md", "docs/"],
    ["*.swp", "!keep.swp"],  # a negation: pathspec answers itself
]


@pytest.mark.parametrize("patterns", PATTERN_SETS)
def test_same_answers_as_pathspec(patterns: list[str]) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    ours = Patterns(patterns)
    assert (ours._fast is None) == any(p.startswith("!") for p in patterns)
    for path, is_dir in itertools.product(PATHS, (False, True)):
        want = spec.match_file(path + "/" if is_dir else path)
        assert ours.match(path, is_dir) == want, (patterns, path, is_dir)
