"""Grade a class: every (lab, student), each submission in its own sandbox, `jobs` at a time.

Workers only run notebooks (run.grade_submission touches no database); this thread writes each result to the
gradebook, the autograded notebook and the report as it arrives, so results do not depend on `jobs`. The batch
always finishes: a submission's problem is that student's result, a database error is that student's error.
"""
from __future__ import annotations

import queue
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import nbformat

from . import gradebook, sandbox
from .course import Course, GradingBroken
from .labs import LABS, lab_spec
from .reports import Result, write_log, write_report
from .run import Graded, LabFiles, grade_submission

UNSAFE_FLAG = "--unsandboxed-i-trust-every-submission"


def students_of(course: Course, labs=LABS, roster=()) -> list[str]:
    """Everyone with a folder in submitted/, everyone already in the gradebook, everyone on the roster."""
    names = set(roster)
    if course.submitted.is_dir():
        names |= {p.name for p in course.submitted.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names |= gradebook.known(course)[0]
    return sorted(names)


def _lab_files(course: Course, spec) -> LabFiles:
    paths = course.paths(spec.name)
    for kind in ("release", "source"):
        if not paths[kind].exists():
            raise GradingBroken(f"{spec.name}: no {paths[kind].relative_to(course.root)}; build and release it with "
                                "`python scripts/build_labs.py`")
    return LabFiles(spec, nbformat.read(str(paths["release"]), as_version=4),
                    nbformat.read(str(paths["source"]), as_version=4))


def autograde(course: Course, labs=LABS, students=None, roster=(), out=print, jobs: int = 1,
              sandboxed: bool = True) -> tuple[list[Result], list[str]]:
    """Grade every (lab, student); returns the results and the problems that mean the grading itself broke.
    `labs`: names from LAB_TABLE, or Lab objects. Raises sandbox.SandboxUnavailable when there is no sandbox
    and `sandboxed` (the safe default)."""
    specs = [lab_spec(lab) for lab in labs]
    labs = [spec.name for spec in specs]
    if sandboxed:
        sandbox.require()
    else:
        print(f"WARNING: {UNSAFE_FLAG}: grading WITHOUT a sandbox. Every submission runs as you, with your "
              "files, your network and this gradebook. Use it only for notebooks you wrote yourself.",
              file=sys.stderr, flush=True)
    problems: list[str] = []
    students = list(students) if students else students_of(course, labs, roster)
    problem = gradebook.ensure_students(course, students)
    if problem:
        problems.append(problem)
    _, released, problem = gradebook.known(course)
    if problem:
        problems.append(problem)
    work, files = [], {}
    for spec in specs:
        lab = spec.name
        if lab not in released:
            problems.append(f"{lab} is not in the gradebook: run `python -m course_utils.grading release` first")
            out(f"{lab}: NOT RELEASED (no tests in the gradebook) -- run `python -m course_utils.grading release`")
            continue
        try:
            files[lab] = _lab_files(course, spec)
        except GradingBroken as e:
            problems.append(str(e))
            out(f"{lab}: {e}")
            continue
        work += [(lab, s) for s in students]

    results: dict[tuple[str, str], Result] = {}
    t0 = time.perf_counter()
    slots: queue.Queue = queue.Queue()
    for i in range(max(1, jobs)):
        slots.put(i)

    def task(lab, student):
        slot = slots.get()
        try:
            return grade_submission(course, files[lab], student, slot=slot, sandboxed=sandboxed)
        except Exception as e:  # noqa: BLE001 - a bug or an environment problem: that student's error, not a crash
            return Graded(lab, student, "error", f"grading problem: {type(e).__name__}: {e}",
                          problem=f"{lab}/{student}: {type(e).__name__}: {e}")
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(task, lab, s) for lab, s in work]
        for fut in as_completed(futures):
            r = _finish(course, fut.result(), problems)
            results[(r.lab, r.student)] = r
            out(r.line())
    ordered = [results[k] for k in work if k in results]
    for lab in labs:
        lab_results = [r for r in ordered if r.lab == lab]
        if lab_results:
            write_report(course, lab, lab_results)
            mean = sum(r.score for r in lab_results) / len(lab_results)
            bad = sum(r.status not in ("graded", "flagged") for r in lab_results)
            flagged = sum(r.status == "flagged" for r in lab_results)
            out(f"{lab}: {len(lab_results)} students, mean {mean:.1f} / {lab_results[0].max_score:.1f}, "
                f"{bad} not gradable, {flagged} flagged for review")
    total = sum(r.score for r in ordered)
    out(f"TOTAL: {len(ordered)} submissions graded in {time.perf_counter() - t0:.1f}s with {max(1, jobs)} job(s), "
        f"{total:.1f} points awarded, {len(problems)} grading problem(s)"
        + ("" if sandboxed else f" -- UNSANDBOXED ({UNSAFE_FLAG})"))
    for p in problems:
        out(f"GRADING PROBLEM: {p}")
    return ordered, problems


def _finish(course: Course, g: Graded, problems: list) -> Result:
    """Record one graded submission: gradebook, autograded notebook, log. Never raises."""
    paths = course.paths(g.lab, g.student)
    if g.problem:
        problems.append(f"{g.lab}/{g.student}: {g.problem}")
        if g.status not in ("error",):
            g.status, g.reason = "error", f"grading problem: {g.problem}"
    folder = paths["autograded"].parent
    try:
        if folder.exists():
            shutil.rmtree(folder)
        if g.notebook is not None and g.status not in ("missing", "invalid"):
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(g.notebook, str(paths["autograded"]))
        write_log(course, g.lab, g.student, f"{g.status}: {g.reason}\n\n{g.log}")
    except OSError as e:
        problems.append(f"{g.lab}/{g.student}: cannot write {folder}: {e}")
    scores = g.scores if g.status not in ("error",) else {k: 0.0 for k in g.scores}
    try:
        score, max_score = gradebook.record(course, g.lab, g.student, scores, g.status == "flagged")
    except Exception as e:  # noqa: BLE001 - one student's database error must not stop the class
        msg = f"gradebook error: {gradebook.short_error(e)}"
        problems.append(f"{g.lab}/{g.student}: {msg}")
        return Result(g.lab, g.student, 0.0, sum(g.max_scores.values()), "error", msg, g.seconds, g.failed)
    return Result(g.lab, g.student, score, max_score, g.status, g.reason, g.seconds, g.failed)
