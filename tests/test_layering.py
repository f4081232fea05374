"""The package's shape stays true: imports run one way (ops -> models -> predictor -> policies ->
engine -> data -> train -> eval -> bench / demo -> cli) with no cycles, files and functions stay
short, nothing edits sys.path, and docstrings carry no project history."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from layering import PACKAGE, module_files, violations

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def test_imports_run_one_way_without_cycles():
    assert violations(ROOT) == []


def _copy_package(tmp_path) -> Path:
    """The package's Python files under ``tmp_path``, to plant imports in."""
    for path in module_files(ROOT).values():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return tmp_path


def test_a_planted_upward_import_is_caught(tmp_path):
    root = _copy_package(tmp_path)
    op = root / PACKAGE / "ops" / "select_keep.py"
    op.write_text(op.read_text() + "\n\ndef _planted():\n    from ..cli import main\n")
    problems = violations(root)
    assert problems[0] == f"upward import: {PACKAGE}.ops.select_keep imports {PACKAGE}.cli"
    # The cli imports everything, so the planted import also closes a cycle through the op.
    assert len(problems) == 2 and problems[1].startswith("import cycle among:")
    assert f"{PACKAGE}.ops.select_keep" in problems[1] and f"{PACKAGE}.cli" in problems[1]


def test_a_planted_import_of_the_facade_is_caught(tmp_path):
    root = _copy_package(tmp_path)
    train = root / PACKAGE / "train" / "trainer.py"
    train.write_text(train.read_text() + "\n\ndef _planted():\n    from .. import Engine\n")
    assert violations(root) == [f"upward import: {PACKAGE}.train.trainer imports {PACKAGE}"]


def test_a_planted_cycle_is_caught(tmp_path):
    root = _copy_package(tmp_path)
    data = root / PACKAGE / "data"
    (data / "scenes.py").write_text((data / "scenes.py").read_text()
                                    + "\n\ndef _planted():\n    from .records import load_jsonl\n")
    (data / "records.py").write_text((data / "records.py").read_text()
                                     + "\n\ndef _planted():\n    from . import scenes\n")
    assert violations(root) == [f"import cycle among: {PACKAGE}.data.records, {PACKAGE}.data.scenes"]


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("name", sorted(module_files(ROOT)))
def test_files_and_functions_stay_short(name):
    path = module_files(ROOT)[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path} is over {MAX_FILE_LINES} lines"
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(ast.parse(text))
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.stdout.split()]


def test_nothing_edits_sys_path():
    edits = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*=|sys\.path\s*\+=")
    offenders = [str(p) for p in _tracked("*.py") if p.is_file() and edits.search(p.read_text())]
    assert offenders == []


SOURCES = ("*.py", "*.cpp", "*.cu", "*.cuh", "*.h", "*.sh", "Makefile", "CMakeLists.txt")


def test_docstrings_and_comments_carry_no_project_history():
    """Issue numbers, sessions and dates belong in git and python_bench/RESULTS.md."""
    history = re.compile(r"\bissues? #?\d|\bsession\b|\b20\d\d-\d\d-\d\d\b", re.IGNORECASE)
    this_file = Path(__file__).resolve()
    found = [f"{path.relative_to(ROOT)}:{n}"
             for pattern in SOURCES for path in _tracked(pattern) if path != this_file
             for n, line in enumerate(path.read_text().splitlines(), 1) if history.search(line)]
    assert found == []
