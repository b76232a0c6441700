"""Every gradebook write of the autograder, one submission at a time, from the grader process only.

Student kernels never see the gradebook (the sandbox does not mount the course folder). A database error while
recording one student (locked, corrupted, full disk) is returned as that student's error: the batch goes on.
"""
from __future__ import annotations

import warnings

from sqlalchemy.exc import SAWarning


def ensure_students(course, students) -> str | None:
    """A gradebook row for everyone (submitted or not). Returns a problem, or None."""
    try:
        with course.gradebook() as gb:
            for s in students:
                gb.update_or_create_student(s)
        return None
    except Exception as e:  # noqa: BLE001 - any database error is reported, never raised mid-batch
        return f"gradebook error while adding students: {short_error(e)}"


def known(course) -> tuple[set[str], set[str], str | None]:
    """(students, released labs) in the gradebook, and a problem if it cannot be read."""
    try:
        with course.gradebook() as gb:
            return {s.id for s in gb.students}, {a.name for a in gb.assignments}, None
    except Exception as e:  # noqa: BLE001
        return set(), set(), f"the gradebook cannot be read: {short_error(e)}"


def record(course, lab: str, student: str, scores: dict, flagged: bool) -> tuple[float, float]:
    """Write the auto scores (manual overrides of an earlier run are cleared); returns (score, max score).
    Raises on database errors: the caller turns them into that student's error."""
    with course.gradebook() as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush chatter on new submissions
        sub = gb.update_or_create_submission(lab, student)
        for nb in sub.notebooks:
            for grade in nb.grades:
                grade.auto_score = float(scores.get(grade.name, 0.0))
                grade.manual_score = None
                grade.extra_credit = None
                grade.needs_manual_grade = False
            nb.flagged = bool(flagged)
        gb.db.commit()
        return float(sub.score), float(sub.max_score)


def short_error(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text[:300]
