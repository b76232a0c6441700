"""Structural rules for the teaching notebooks (nbval itself re-runs them and compares outputs)."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def library_names() -> set[str]:
    names = set()
    for f in (ROOT / "course_utils").rglob("*.py"):
        tree = ast.parse(f.read_text())
        names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
    return names


def code_cells(path):
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_setup.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_redefinition_of_course_utils(path):
    lib = library_names()
    for cell in code_cells(path):
        for name in re.findall(r"^\s*(?:def|class)\s+(\w+)", "".join(cell["source"]), re.M):
            assert name not in lib, f"{path.name} defines {name}, which course_utils has: import it instead"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executed_without_errors_or_warnings(path):
    for cell in code_cells(path):
        assert cell.get("execution_count") is not None, f"{path.name} has an unexecuted cell"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name} stores an error: {out.get('ename')}"
            if out.get("name") == "stderr":
                assert "Warning" not in "".join(out["text"]), f"{path.name} stores a warning: {''.join(out['text'])[:300]}"


def test_notebooks_match_their_sources():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_notebooks.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
