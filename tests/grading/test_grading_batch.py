"""course_utils.grading.batch / run: a class graded end to end (the session batch, see conftest.py), parallel
grading equal to sequential, and gradebook errors that cost one student, never the batch."""
from __future__ import annotations

import pytest
from conftest import ABSENT, TOY_HONEST, toy_notebook
from submissions import LAB1, LAB2, PARTIAL, Course as Builder, real_lab_submissions, write

import redteam_lab
from course_utils import grading as G
from course_utils.grading import batch as batch_module
from course_utils.grading import gradebook

RT = redteam_lab.NAME
pytestmark = pytest.mark.slow


def test_solution_scores_full_marks(batch):
    for lab in (*G.LABS, RT):
        r = batch.result(lab, "s01_full" if lab != RT else "t01_full")
        assert (r.status, r.score) == ("graded", r.max_score) and r.max_score > 0, r
        assert r.reason == "all tests passed"


def test_untouched_notebook_scores_zero(batch):
    for lab, student in [*[(lab, "s02_blank") for lab in G.LABS], (RT, "t02_blank")]:
        r = batch.result(lab, student)
        assert r.status == "graded" and r.score == 0, r
        assert "failed:" in r.reason


def test_partly_correct_scores_in_between(batch):
    for lab in PARTIAL:
        r = batch.result(lab, "s03_partial")
        assert 0 < r.score < r.max_score, r


def test_batch_completes_without_grading_problems(batch):
    assert batch.problems == [], "no submission may look like a broken grader"
    students = set(real_lab_submissions(Builder(batch.course.root))) | set(TOY_HONEST) | {ABSENT}
    students |= {a.student for a in __import__("hostile").ATTACKS}
    assert set(batch.results) == {(lab, s) for lab in (*G.LABS, RT) for s in students}
    print(f"batch: {len(batch.results)} (lab, student) pairs in {batch.seconds:.0f}s")


@pytest.mark.parametrize("student, lab, status, fragment", [
    ("s04_messy", LAB1, "graded", "failed: nf4_bits_tests"),
    ("s04_messy", LAB1, "graded", "edited test cells restored: nf4_bits_tests"),
    ("s04_messy", LAB1, "graded", "deleted cells restored from the release: lora_param_count"),
    ("s04_messy", LAB1, "graded", "duplicated cells (extra copies ungraded): adam_bytes_per_param"),
    ("s04_messy", LAB1, "graded", "full_ft_7b_gib called sys.exit()"),
    ("s05_dead", LAB2, "crashed", "the kernel died in inject_lora"),
    ("t03_loop", RT, "graded", "capital_sentence timed out after 6s (an infinite loop?) and was interrupted"),
    ("s06_broken", LAB1, "invalid", "not valid JSON"),
    ("s06_broken", LAB2, "missing", "no notebook"),
    (ABSENT, LAB1, "missing", "no notebook"),
])
def test_each_broken_submission_is_scored_with_a_clear_reason(batch, student, lab, status, fragment):
    r = batch.result(lab, student)
    assert r.status == status and fragment in r.reason, r
    assert r.score < r.max_score
    line = next(ln for ln in batch.lines if f"  {student} " in ln and ln.startswith(lab))
    assert fragment in line, "the printed summary line carries the reason"


def test_broken_cells_cost_only_their_own_points(batch):
    messy = batch.result(LAB1, "s04_messy")
    assert messy.score == 6, messy  # bytes, adam, full fine-tuning 16 B/param, the full prediction still count
    dead = batch.result(LAB2, "s05_dead")
    assert 0 < dead.score < dead.max_score, "tests before the crash count"
    loop = batch.result(RT, "t03_loop")
    assert loop.score == loop.max_score - 1, loop


def test_gradebook_has_a_row_for_every_student(batch):
    with batch.course.gradebook() as gb:
        assert {s.id for s in gb.students} == {s for _, s in batch.results}
        for (lab, student), r in batch.results.items():
            assert float(gb.find_submission(lab, student).score) == r.score, (lab, student)


def test_jobs_do_not_change_results(toy_course):
    """The same submissions graded one at a time and two at a time: identical scores, statuses and reasons."""
    import hostile

    root, builder, students = toy_course.root, Builder(toy_course.root), []
    for student in ("t01_full", "t02_blank"):
        write(root, f"jobs_{student}", RT, lambda k=TOY_HONEST[student]: toy_notebook(builder, k))
        students.append(f"jobs_{student}")
    for attack in hostile.ATTACKS:
        if attack.student in ("r04_hook_evasive", "r14_rebind_evasive", "r15_edit_provided", "r08_ref_dynamic"):
            write(root, f"jobs_{attack.student}", RT, lambda a=attack: a.build(builder, root))
            students.append(f"jobs_{attack.student}")
    outcomes = []
    for jobs in (1, 2):
        results, problems = G.autograde(toy_course, [redteam_lab.SPEC], students=students, out=lambda *_: None,
                                        jobs=jobs)
        assert problems == []
        outcomes.append({(r.student, r.status, r.score, r.reason) for r in results})
    assert outcomes[0] == outcomes[1]


def test_a_gradebook_error_costs_one_student_not_the_batch(toy_course, monkeypatch, capsys):
    """The database refuses one student's scores (as a locked or corrupt gradebook would): that student gets an
    `error` row and the exit status says so; everyone else is graded. No kernel runs: the notebooks are broken."""
    course = toy_course
    for student in ("db_a", "db_b", "db_c"):
        write(course.root, student, RT, "{ broken")
    real = gradebook.record

    def flaky(course_, lab, student, scores, flagged):
        if student == "db_b":
            from sqlalchemy.exc import OperationalError

            raise OperationalError("UPDATE grade", {}, Exception("database is locked"))
        return real(course_, lab, student, scores, flagged)

    monkeypatch.setattr(gradebook, "record", flaky)
    results, problems = batch_module.autograde(course, [redteam_lab.SPEC], students=["db_a", "db_b", "db_c"], out=print)
    out = capsys.readouterr().out
    by = {r.student: r for r in results}
    assert by["db_b"].status == "error" and "database is locked" in by["db_b"].reason
    assert by["db_a"].status == by["db_c"].status == "invalid"
    assert len(problems) == 1 and "db_b" in problems[0] and "GRADING PROBLEM" in out and "TOTAL:" in out
