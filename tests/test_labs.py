"""The nbgrader labs as files: labs/ is exactly nbgrader's output, nothing secret leaks, the solutions are clean."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import HIDDEN_BEGIN, HIDDEN_END, LABS, lab_spec, load_course, release

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"


def solution(lab):
    return nbformat.read(str(ROOT / "solutions" / lab / f"{lab}.ipynb"), as_version=4)


def released(lab):
    return nbformat.read(str(ROOT / "labs" / lab / f"{lab}.ipynb"), as_version=4)


def nbgrader_meta(cell):
    return cell.metadata.get("nbgrader", {})


def regions(source: str, begin: str, end: str) -> list[str]:
    """Lines strictly inside begin/end markers."""
    out, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line)
    return out


def secret_lines(lab) -> tuple[list[str], list[str]]:
    """Solution and hidden-test lines specific enough to identify (not a bare `return x` or `pass`)."""
    nb = solution(lab)
    sol, hidden = [], []
    for cell in nb.cells:
        sol += regions(cell.source, SOLUTION_BEGIN, SOLUTION_END)
        hidden += regions(cell.source, HIDDEN_BEGIN, HIDDEN_END)
    public = "\n".join(_strip_regions(cell.source) for cell in nb.cells)  # what students may see anyway

    def specific(lines):
        return sorted({ln.strip() for ln in lines if len(ln.strip()) >= 12 and ln.strip() not in public})

    return specific(sol), specific(hidden)


def _strip_regions(source: str) -> str:
    keep, inside = [], False
    for line in source.split("\n"):
        if SOLUTION_BEGIN in line or HIDDEN_BEGIN in line:
            inside = True
        elif SOLUTION_END in line or HIDDEN_END in line:
            inside = False
        elif not inside:
            keep.append(line)
    return "\n".join(keep)


# ---------------------------------------------------------------------------------------------- generated = committed

@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """Run `release` (nbgrader generate_assignment) on a copy of solutions/ in a temporary course."""
    root = tmp_path_factory.mktemp("course")
    for lab in LABS:
        shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
    saved = dict(os.environ)
    try:
        course = load_course(root)
        assert release(course, LABS, out=lambda *_: None), "nbgrader generate_assignment failed on solutions/"
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root


@pytest.mark.parametrize("lab", LABS)
def test_labs_are_exactly_what_generate_assignment_makes(lab, regenerated):
    fresh = nbformat.read(str(regenerated / "labs" / lab / f"{lab}.ipynb"), as_version=4)
    committed = released(lab)
    assert [c.cell_type for c in committed.cells] == [c.cell_type for c in fresh.cells]
    for i, (a, b) in enumerate(zip(committed.cells, fresh.cells)):
        assert a.source == b.source, f"labs/{lab} cell {i} differs from generate_assignment's: run `python scripts/build_labs.py`"
        assert nbgrader_meta(a) == nbgrader_meta(b), f"cell {i}: nbgrader metadata differs (checksum, points, ids)"


@pytest.mark.parametrize("lab", LABS)
def test_solutions_match_their_python_source(lab):
    """solutions/ is written by scripts/build_labs.py; a hand edit would be lost at the next build."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("build_labs", ROOT / "scripts" / "build_labs.py")
        build_labs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build_labs)
        expected = build_labs.to_notebook(build_labs.load_lab(lab))
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stored = solution(lab)
    assert [c.source for c in stored.cells] == [c.source for c in expected.cells], (
        f"solutions/{lab} is out of date with scripts/labs/{lab}.py: run `python scripts/build_labs.py {lab}`")


# ---------------------------------------------------------------------------------------------- no leaks

@pytest.mark.parametrize("lab", LABS)
def test_student_notebook_has_no_solution_and_no_hidden_test(lab):
    text = "\n".join(c.source for c in released(lab).cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", HIDDEN_BEGIN, HIDDEN_END):
        assert marker not in text, f"labs/{lab} contains the marker {marker!r}"
    sol, hidden = secret_lines(lab)
    assert sol and hidden, "the lab should have solutions and hidden tests to protect"
    leaked = [ln for ln in sol + hidden if ln in text]
    assert not leaked, f"labs/{lab} leaks: {leaked[:5]}"
    assert all(not c.get("outputs") for c in released(lab).cells if c.cell_type == "code"), "outputs must be cleared"


# ---------------------------------------------------------------------------------------------- solution notebooks

@pytest.mark.parametrize("lab", LABS)
def test_solution_is_stored_executed_and_clean(lab):
    for i, cell in enumerate(solution(lab).cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {i} never executed: run `python scripts/build_labs.py`"
        for out in cell.outputs:
            assert out.output_type != "error", f"cell {i} stores {out.ename}: {out.evalue}"
            assert out.get("name") != "stderr", f"cell {i} stores stderr: {out.text[:200]}"
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert not re.search(r"0x[0-9a-f]{6,}", text), f"cell {i} prints a memory address (nbval would fail)"


@pytest.mark.parametrize("lab", LABS)
def test_lab_follows_the_house_style(lab):
    nb = solution(lab)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "torch.__version__" in first_code.source, "the first code cell prints versions"
    grade_cells = [c for c in nb.cells if nbgrader_meta(c).get("grade")]
    answer_cells = [c for c in nb.cells if nbgrader_meta(c).get("solution")]
    ids = [nbgrader_meta(c)["grade_id"] for c in grade_cells + answer_cells]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    assert all(re.fullmatch(r"[a-z0-9_]+", i) and len(i) > 6 for i in ids), f"descriptive snake_case ids: {ids}"
    assert all(nbgrader_meta(c)["points"] > 0 for c in grade_cells)
    for c in grade_cells:
        gid = nbgrader_meta(c)["grade_id"]
        visible = _strip_regions(c.source)
        assert re.search(r"assert|check_", visible), f"{gid}: a visible test must come before the hidden ones"
    # every answer is followed by a test before the next answer
    kinds = ["a" if nbgrader_meta(c).get("solution") else "t" for c in nb.cells if nbgrader_meta(c)]
    assert "aa" not in "".join(kinds) and kinds[-1] == "t", f"answer/test order: {''.join(kinds)}"
    assert sum(bool(regions(c.source, HIDDEN_BEGIN, HIDDEN_END)) for c in grade_cells) >= len(grade_cells) // 2


# ---------------------------------------------------------------------------------------------- grading-safe labs

def _hidden(cell) -> str:
    return "\n".join(regions(cell.source, HIDDEN_BEGIN, HIDDEN_END))


@pytest.mark.parametrize("lab", LABS)
def test_hidden_tests_never_use_the_reference_in_the_students_kernel(lab):
    """What a hidden test compares with is a literal computed when the lab is built: importing the reference in
    the kernel would let the student's code reach it (and change it) while the test runs."""
    spec = lab_spec(lab)
    assert spec.reference, f"{lab} should name its reference module in LAB_TABLE"
    for cell in solution(lab).cells:
        hidden = _hidden(cell)
        for module in spec.reference:
            assert module not in hidden, f"a hidden test of {lab} imports {module}"
        assert "check_lora_layer" not in hidden, "check_lora_layer compares with course_utils.lora in the kernel"
        used = set(re.findall(r"\b(\w+)\(", hidden))
        assert not used & {n for n in spec.off_limits if n not in _student_defines(lab)}, used


def _student_defines(lab) -> set[str]:
    return {m for c in solution(lab).cells if nbgrader_meta(c).get("solution")
            for m in re.findall(r"^(?:def|class) (\w+)", c.source, re.M)}


@pytest.mark.parametrize("lab", LABS)
def test_stubs_and_test_cells_tell_students_what_to_do(lab):
    nb = released(lab)
    for cell in nb.cells:
        if cell.cell_type == "code" and "raise NotImplementedError" in cell.source:
            assert "raise NotImplementedError()" not in cell.source
            assert re.search(r'raise NotImplementedError\(".+"\)', cell.source), "the stub says what to do"
    guarded = [c for c in nb.cells if nbgrader_meta(c).get("grade") and "is not defined yet: run" in c.source]
    grade_cells = [c for c in nb.cells if nbgrader_meta(c).get("grade")]
    assert len(guarded) == len(grade_cells), "every test cell names the cell to run first instead of a NameError"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Restart Kernel and Run All Cells..." in text and "Restart & Run All" not in text
