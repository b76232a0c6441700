"""Grading for real: a batch of good, partial, hostile and broken submissions through nbgrader and the gradebook.

One module-scoped batch (10 students who submit, one who never does, both labs) is graded once; every test
below asserts on it. Each submission runs in its own kernel exactly once.
"""
from __future__ import annotations

import copy
import csv
import html
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import grading as G

ROOT = Path(__file__).resolve().parents[1]
LAB1, LAB2 = G.LABS
TIMEOUT = 20  # seconds per cell in the test course: cuts the infinite loop fast, leaves room for a busy machine
ABSENT = "s11_absent"


# ---------------------------------------------------------------------------------------------- building submissions

def gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def index(nb, grade_id):
    return next(i for i, c in enumerate(nb.cells) if gid(c) == grade_id)


def student_copy(lab, filled=None):
    """The released notebook with the answers in `filled` (all if None) completed as the solution does."""
    nb = nbformat.read(str(ROOT / "labs" / lab / f"{lab}.ipynb"), as_version=4)
    sol = nbformat.read(str(ROOT / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
    answers = {gid(c): c.source for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        g = gid(cell)
        if g in answers and (filled is None or g in filled):
            cell.source = "\n".join(ln for ln in answers[g].split("\n") if "### BEGIN SOLUTION" not in ln
                                    and "### END SOLUTION" not in ln)
    return nb


def with_answer(lab, grade_id, source):
    nb = student_copy(lab)
    nb.cells[index(nb, grade_id)].source = source
    return nb


def edited_tests():
    """Wrong answer, and the test that would catch it replaced by `pass`: nbgrader must restore the test."""
    nb = with_answer(LAB1, "bytes_per_param", "def bytes_per_param(dtype):\n    return 3")
    nb.cells[index(nb, "bytes_per_param_tests")].source = "pass"
    return nb


def deleted_and_duplicated():
    nb = student_copy(LAB1)
    i = index(nb, "lora_param_count")
    del nb.cells[i:i + 2]                                  # an answer and its test
    j = index(nb, "adam_bytes_per_param")
    dup = copy.deepcopy(nb.cells[j])
    dup.id = "student-duplicate"
    nb.cells.insert(j + 1, dup)                            # a test cell twice
    return nb


PARTIAL = {LAB1: {"bytes_per_param", "nf4_bits_per_param", "optimizer_bytes_per_param"},
           LAB2: {"lora_parameter_count", "lora_layer"}}

SUBMISSIONS = {
    # student: {lab: notebook | text | None (no file)}; labs not listed get the full solution
    "s01_full": {},
    "s02_blank": {LAB1: "blank", LAB2: "blank"},
    "s03_partial": {LAB1: "partial", LAB2: "partial"},
    "s04_raises": {LAB1: lambda: with_answer(LAB1, "optimizer_bytes_per_param",
                                             "def optimizer_bytes_per_param(o):\n    raise RuntimeError('oops')")},
    "s05_loop": {LAB1: lambda: with_answer(LAB1, "nf4_bits_per_param", "while True:\n    pass")},
    "s06_exit": {LAB1: lambda: with_answer(LAB1, "full_ft_7b_gib", "import sys\nsys.exit()")},
    "s07_dead": {LAB2: lambda: with_answer(LAB2, "inject_lora", "import os\nos._exit(1)")},
    "s08_edited": {LAB1: edited_tests},
    "s09_cells": {LAB1: deleted_and_duplicated},
    "s10_broken": {LAB1: "{ this is not json", LAB2: None},
}


def write(root, student, lab, spec):
    """spec: ... (the full solution), "blank", "partial", other text (written as is), None (no notebook),
    or a function returning a notebook."""
    folder = root / "nbgrader" / "submitted" / student / lab
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lab}.ipynb"
    if spec is None:
        (folder / "notes.txt").write_text("I forgot the notebook")
    elif spec is ...:
        nbformat.write(student_copy(lab), str(path))
    elif spec == "blank":
        nbformat.write(student_copy(lab, filled=set()), str(path))
    elif spec == "partial":
        nbformat.write(student_copy(lab, filled=PARTIAL[lab]), str(path))
    elif isinstance(spec, str):
        path.write_text(spec)
    else:
        nbformat.write(spec(), str(path))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    saved = dict(os.environ)  # load_course sets the kernels' environment; give the rest of the session its own back
    try:
        yield _grade_batch(tmp_path_factory.mktemp("course"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _grade_batch(root):
    for lab in G.LABS:
        shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
    course = G.load_course(root, timeout=TIMEOUT)
    assert G.release(course, G.LABS, out=lambda *_: None)
    for student, labs in SUBMISSIONS.items():
        for lab in G.LABS:
            write(root, student, lab, labs.get(lab, ...))
    lines = []
    t0 = time.perf_counter()
    results, problems = G.autograde(course, G.LABS, roster=[ABSENT], out=lines.append)
    seconds = time.perf_counter() - t0
    print(f"\ngraded {len(results)} submissions in {seconds:.0f}s")
    print("\n".join(lines))
    return course, {(r.lab, r.student): r for r in results}, problems, seconds, lines


@pytest.fixture(autouse=True)
def _restore_env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def result(batch, lab, student):
    return batch[1][(lab, student)]


# ---------------------------------------------------------------------------------------------- round trip

@pytest.mark.slow
def test_solution_scores_full_marks(batch):
    for lab in G.LABS:
        r = result(batch, lab, "s01_full")
        assert (r.status, r.score) == ("graded", r.max_score) and r.max_score > 0, r


@pytest.mark.slow
def test_untouched_notebook_scores_zero_without_aborting(batch):
    for lab in G.LABS:
        r = result(batch, lab, "s02_blank")
        assert r.status == "graded" and r.score == 0, r
        assert "failed:" in r.reason


@pytest.mark.slow
def test_partly_correct_scores_in_between(batch):
    for lab in G.LABS:
        r = result(batch, lab, "s03_partial")
        assert 0 < r.score < r.max_score, r


# ---------------------------------------------------------------------------------------------- hostile and broken

@pytest.mark.slow
def test_batch_completes_and_good_submissions_keep_full_marks(batch):
    course, results, problems, _, _ = batch
    assert problems == [], "no submission may look like a broken grader"
    students = list(SUBMISSIONS) + [ABSENT]
    assert set(results) == {(lab, s) for lab in G.LABS for s in students}
    good = [(lab, s) for s, labs in SUBMISSIONS.items() for lab in G.LABS if lab not in labs]
    assert len(good) >= 8
    for key in good:
        assert results[key].score == results[key].max_score, results[key]


@pytest.mark.slow
@pytest.mark.parametrize("student, lab, status, fragment", [
    ("s04_raises", LAB1, "graded", "adam_bytes_per_param"),
    ("s05_loop", LAB1, "graded", f"timed out after {TIMEOUT}s"),
    ("s06_exit", LAB1, "graded", "called sys.exit()"),
    ("s07_dead", LAB2, "crashed", "kernel died"),
    ("s08_edited", LAB1, "graded", "edited test cells restored: bytes_per_param_tests"),
    ("s09_cells", LAB1, "graded", "deleted cells restored from the release: lora_param_count"),
    ("s09_cells", LAB1, "graded", "duplicated cells"),
    ("s10_broken", LAB1, "invalid", "not valid JSON"),
    ("s10_broken", LAB2, "missing", "no notebook"),
    (ABSENT, LAB1, "missing", "no notebook"),
])
def test_each_bad_submission_is_scored_with_a_clear_reason(batch, student, lab, status, fragment):
    r = result(batch, lab, student)
    assert r.status == status and fragment in r.reason, r
    assert r.score < r.max_score
    line = next(ln for ln in batch[4] if f"  {student} " in ln and ln.startswith(lab))
    assert fragment in line, "the printed summary line carries the reason"


@pytest.mark.slow
def test_hostile_cells_cost_only_their_own_points(batch):
    # the loop, sys.exit and the raising answer each break one task; the rest of the notebook still scores
    for student in ("s04_raises", "s05_loop", "s06_exit", "s09_cells"):
        r = result(batch, LAB1, student)
        assert 0 < r.score < r.max_score, r
    # the edited test was restored, so the wrong answer it guards is caught
    assert "bytes_per_param_tests" in result(batch, LAB1, "s08_edited").failed_cells


@pytest.mark.slow
def test_gradebook_has_a_row_for_every_student(batch):
    course, results, *_ = batch
    with course.gradebook() as gb:
        assert {s.id for s in gb.students} == set(SUBMISSIONS) | {ABSENT}
        for (lab, student), r in results.items():
            sub = gb.find_submission(lab, student)
            assert float(sub.score) == r.score, (lab, student)


@pytest.mark.slow
def test_batch_of_two_labs_for_ten_students_takes_under_5_minutes(batch):
    seconds = batch[3]
    print(f"two labs x {len(SUBMISSIONS)} students (+1 absent): {seconds:.0f}s")
    assert seconds < 300


# ---------------------------------------------------------------------------------------------- feedback and export

def _text_of_html(path: Path) -> str:
    """Feedback HTML without tags: syntax highlighting splits code into spans."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


@pytest.mark.slow
def test_feedback_never_shows_hidden_tests(batch):
    course = batch[0]
    assert G.feedback(course, G.LABS, out=lambda *_: None)
    from test_labs import secret_lines

    files = sorted(course.feedback.glob("*/*/*.html"))
    assert len(files) >= 15
    for lab in G.LABS:
        _, hidden = secret_lines(lab)
        for f in [f for f in files if f.parent.name == lab]:
            text = _text_of_html(f)
            assert "HIDDEN TESTS" not in text
            leaked = [ln for ln in hidden if ln in text]
            assert not leaked, f"{f.relative_to(course.root)} shows hidden test lines: {leaked[:3]}"
    # failing hidden tests still explain themselves
    text = _text_of_html(course.feedback / "s08_edited" / LAB1 / f"{LAB1}.html")
    assert "fp32 = 32 bits" in text


@pytest.mark.slow
def test_export_writes_every_student_and_lab(batch, tmp_path):
    course = batch[0]
    assert G.main(["--course-dir", str(course.root), "export", "--out", str(tmp_path / "grades.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "grades.csv")))
    assert len(rows) == 2 * (len(SUBMISSIONS) + 1)
    full = next(r for r in rows if r["student_id"] == "s01_full" and r["lab"] == LAB1)
    assert float(full["score"]) == float(full["max_score"]) and full["status"] == "graded"


@pytest.mark.slow
def test_cli_exit_status_is_zero_when_only_students_fail(batch, capsys):
    course = batch[0]
    # no kernel runs: both of this student's submissions are unreadable
    code = G.main(["--course-dir", str(course.root), "autograde", "--student", "s10_broken"])
    out = capsys.readouterr().out
    assert code == 0 and "TOTAL:" in out and "s10_broken" in out


def test_cli_exit_status_is_nonzero_when_grading_itself_breaks(tmp_path, capsys):
    # nothing released: there are no tests to grade with
    (tmp_path / "nbgrader" / "submitted" / "s1" / LAB1).mkdir(parents=True)
    code = G.main(["--course-dir", str(tmp_path), "autograde", "--lab", LAB1])
    out = capsys.readouterr().out
    assert code == 1 and "NOT RELEASED" in out


def test_collect_copies_downloads_into_nbgrader_layout(tmp_path):
    inbox = tmp_path / "downloads"
    (inbox / "ana").mkdir(parents=True)
    (inbox / "ana" / f"{LAB1}.ipynb").write_text("{}")
    (inbox / f"ben_{LAB2}.ipynb").write_text("{}")
    course = G.load_course(tmp_path / "course")
    assert G.collect(course, inbox, out=lambda *_: None) == 2
    assert (course.submitted / "ana" / LAB1 / f"{LAB1}.ipynb").exists()
    assert (course.submitted / "ben" / LAB2 / f"{LAB2}.ipynb").exists()
