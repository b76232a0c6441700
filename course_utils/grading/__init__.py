"""Instructor tooling for the nbgrader labs: release, collect, autograde (sandboxed), feedback, export.

    python -m course_utils.grading release            # solutions/ -> labs/ (nbgrader generate_assignment)
    python -m course_utils.grading collect --from DIR # DIR/<student>/<lab>.ipynb -> nbgrader/submitted/...
    python -m course_utils.grading autograde -j 2     # every submission, each in its own sandbox, 2 at a time
    python -m course_utils.grading feedback           # HTML feedback: code, points, failure messages
    python -m course_utils.grading export             # grades.csv

One module per job:

    labs.py           the graded labs (LAB_TABLE: add a lab with one line), hidden-test markers
    course.py         where a course's files are (nbgrader_config.py, re-rooted), nbgrader's environment
    release.py        release (generate_assignment) and collect
    assemble.py       the notebook that is run: the lab's own cells + only the student's answers
    screen.py         reading answers before they run: reference use and tampering
    sandbox.py        the bubblewrap box and its limits
    kernel.py         one sandboxed kernel driven from outside: replies, capped outputs, timeouts, kill
    probe.py          the integrity check run in the kernel after every cell
    run.py            grading one submission (no database): validate, assemble, run, decide each test
    batch.py          a class, `--jobs` at a time; the only gradebook writer is this process (gradebook.py)
    reports.py        reports/<lab>.json, logs, grades.csv
    preprocessors.py  the nbgrader preprocessors this course configures (nbgrader_config.py)
    feedback.py       feedback HTML, cleaned
    cli.py            the command line

Why not `nbgrader autograde`: it exits 0 when submissions fail, runs student code with the instructor's rights
inside the course folder (solutions, gradebook, config, the environment), and trusts the notebook's own tags and
outputs for the verdict. Here every submission is validated, assembled from the release, screened, run in a
sandbox and decided from outside the kernel; the exit status is non-zero only when the grading itself broke.
"""
from __future__ import annotations

from .assemble import Verdict, validate_submission
from .batch import UNSAFE_FLAG, autograde, students_of
from .cli import main
from .course import Course, GradingBroken, load_course, prepare_environment
from .feedback import feedback
from .labs import HIDDEN_BEGIN, HIDDEN_END, LAB_TABLE, LABS, Lab, lab_spec
from .preprocessors import (FEEDBACK_PREPROCESSORS, SANITIZE_PREPROCESSORS, DeduplicateCells, HideHiddenTests,
                            RefuseUnsandboxedAutograde, RestoreDeletedCells, SanitizeFeedback)
from .release import collect, release
from .reports import Result, export
from .sandbox import Limits, SandboxUnavailable

__all__ = [
    "LABS", "LAB_TABLE", "Lab", "lab_spec", "HIDDEN_BEGIN", "HIDDEN_END",
    "Course", "GradingBroken", "load_course", "prepare_environment",
    "release", "collect", "autograde", "students_of", "feedback", "export", "main",
    "Result", "Verdict", "validate_submission", "Limits", "SandboxUnavailable", "UNSAFE_FLAG",
    "SANITIZE_PREPROCESSORS", "FEEDBACK_PREPROCESSORS", "RestoreDeletedCells", "DeduplicateCells",
    "HideHiddenTests", "SanitizeFeedback", "RefuseUnsandboxedAutograde",
]
