"""docs/ARCHITECTURE.md stays true: its file list is the repository's (``git ls-files``) and it
names every command of the ``dyrate`` CLI."""
import argparse
import re
import subprocess
from pathlib import Path

import pytest

from dyrate_engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def listed_paths(text: str) -> tuple[set[str], set[str]]:
    """``(files, folders without children)`` of the first code block under "## Files": one entry
    per line, two spaces of indent per folder level, the name first, then its description."""
    block = text.split("## Files", 1)[1].split("```", 2)[1]
    files, folders, stack = set(), {}, []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth]
        path = "".join(stack) + name
        if name.endswith("/"):
            folders[path] = False
            stack.append(name)
        else:
            files.add(path)
        for parent in range(1, len(stack) + (0 if name.endswith("/") else 1)):
            folders["".join(stack[:parent])] = True
    return files, {f for f, has_children in folders.items() if not has_children}


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


def test_the_file_list_is_the_repositorys():
    files, leaves = listed_paths(DOC.read_text())
    repo = tracked()
    covered = {f for f in repo if any(f.startswith(folder) for folder in leaves)}
    assert sorted(repo - files - covered) == [], "tracked but not in docs/ARCHITECTURE.md"
    assert sorted(files - repo) == [], "in docs/ARCHITECTURE.md but not tracked"
    assert all(any(f.startswith(folder) for f in repo) for folder in leaves)


def test_the_parser_reads_nesting():
    text = "## Files\n```\na/\n  b.py  x\n  c/\n    d.py  y\ne/  z\nf.txt  w\n```\n"
    assert listed_paths(text) == ({"a/b.py", "a/c/d.py", "f.txt"}, {"e/"})


def _subcommands(parser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_named():
    text = DOC.read_text()
    commands = _subcommands(build_parser())
    names = [f"dyrate {name}" for name in commands if name != "bench"]
    names += [f"dyrate bench {name}" for name in _subcommands(commands["bench"])]
    missing = [n for n in names if not re.search(rf"`{n}[` ]", text)]
    assert missing == []
