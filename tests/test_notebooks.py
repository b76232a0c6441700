"""Structural rules for the chapters' code (nbval re-runs the reference editions and compares outputs;
tests/test_editions.py checks the two editions against their sources)."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*(ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"),
                    *(ROOT / "solutions" / "notebooks").glob("[0-9][0-9]_*.ipynb")])


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_redefinition_of_course_utils(path):
    lib = library_names()
    for cell in code_cells(path):
        for name in re.findall(r"^\s*(?:def|class)\s+(\w+)", "".join(cell["source"]), re.M):
            assert name not in lib, f"{path.name} defines {name}, which course_utils has: import it instead"


def test_pytest_checks_the_reference_editions_not_the_student_ones():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "solutions" in cfg["testpaths"] and "notebooks" not in cfg["testpaths"], \
        "nbval compares stored outputs: the student editions have none, the reference editions (solutions/) do"
