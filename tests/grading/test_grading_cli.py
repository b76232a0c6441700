"""course_utils.grading.cli (with release.py and reports.py): exit codes, refusing to grade unsandboxed,
the loud opt-out, collect and export."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from conftest import ROOT, TOY_HONEST, require_sandbox, toy_notebook
from submissions import LAB1, LAB2, Course as Builder, write

import redteam_lab
from course_utils import grading as G
from course_utils.grading import sandbox

RT = redteam_lab.NAME


@pytest.mark.slow
def test_export_writes_every_student_and_lab(batch, tmp_path):
    assert G.main(["--course-dir", str(batch.course.root), "export", "--out", str(tmp_path / "grades.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "grades.csv")))
    students = {s for _, s in batch.results}
    assert len(rows) == len(G.LABS) * len(students), "one row per student and released lab in LABS"
    full = next(r for r in rows if r["student_id"] == "s01_full" and r["lab"] == LAB1)
    assert float(full["score"]) == float(full["max_score"]) and full["status"] == "graded"


@pytest.mark.slow
def test_exit_status_is_zero_when_only_students_fail(batch, capsys):
    # no kernel runs: both of this student's submissions are unreadable
    code = G.main(["--course-dir", str(batch.course.root), "autograde", "--student", "s06_broken"])
    out = capsys.readouterr().out
    assert code == 0 and "TOTAL:" in out and "s06_broken" in out


def test_exit_status_is_nonzero_when_grading_itself_breaks(tmp_path, capsys):
    require_sandbox()
    (tmp_path / "nbgrader" / "submitted" / "s1" / LAB1).mkdir(parents=True)
    code = G.main(["--course-dir", str(tmp_path), "autograde", "--lab", LAB1])
    out = capsys.readouterr().out
    assert code == 1 and "NOT RELEASED" in out


def test_without_a_sandbox_autograde_refuses_and_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "no-bwrap"))
    code = G.main(["--course-dir", str(tmp_path), "autograde"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to grade" in err and "apt-get install -y bubblewrap" in err
    assert G.UNSAFE_FLAG in err, "the message names the opt-out"


def test_the_opt_out_grades_loudly(toy_course, tmp_path, monkeypatch, capsys):
    """Only for notebooks the instructor wrote: no sandbox, a warning on every run and in the summary line."""
    write(toy_course.root, "optout_me", RT, lambda: toy_notebook(Builder(toy_course.root), "full"))
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "no-bwrap"))
    results, problems = G.autograde(toy_course, [redteam_lab.SPEC], students=["optout_me"], sandboxed=False,
                                    out=print)
    captured = capsys.readouterr()
    assert problems == [] and results[0].score == results[0].max_score
    assert "WARNING" in captured.err and "WITHOUT a sandbox" in captured.err and "UNSANDBOXED" in captured.out


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # nbgrader's own autoflush chatter
def test_plain_nbgrader_autograde_refuses(toy_course):
    """nbgrader's own autograde would run student code with the instructor's rights: it stops, naming ours."""
    write(toy_course.root, "plain_me", RT, lambda: toy_notebook(Builder(toy_course.root), "full"))
    res = toy_course.api().autograde(RT, "plain_me", force=True, create=True)
    assert not res["success"] and "python -m course_utils.grading autograde" in res["log"] + res.get("error", "")


def test_collect_copies_only_notebooks_into_nbgrader_layout(tmp_path):
    inbox = tmp_path / "downloads"
    (inbox / "ana").mkdir(parents=True)
    (inbox / "ana" / f"{LAB1}.ipynb").write_text("{}")
    (inbox / "ana" / "evil.html").write_text("<script></script>")
    (inbox / f"ben_{LAB2}.ipynb").write_text("{}")
    course = G.load_course(tmp_path / "course")
    assert G.collect(course, inbox, out=lambda *_: None) == 2
    assert (course.submitted / "ana" / LAB1 / f"{LAB1}.ipynb").exists()
    assert (course.submitted / "ben" / LAB2 / f"{LAB2}.ipynb").exists()
    assert not list(course.submitted.rglob("*.html"))


def test_python_dash_m_runs_the_command_line():
    res = subprocess.run([sys.executable, "-m", "course_utils.grading", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0 and "autograde" in res.stdout


def test_every_name_other_code_imports_stays_importable():
    from course_utils.grading import (FEEDBACK_PREPROCESSORS, HIDDEN_BEGIN, HIDDEN_END, LABS,  # noqa: F401
                                      SANITIZE_PREPROCESSORS, load_course, prepare_environment, release)

    assert LABS == ("lab01_memory_wall", "lab02_lora_from_scratch", "lab03_nf4", "lab04_qlora",
                    "lab05_failure_diagnosis")
    assert set(TOY_HONEST) and HIDDEN_BEGIN == "BEGIN HIDDEN TESTS"
