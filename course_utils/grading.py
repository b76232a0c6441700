"""Instructor commands for the nbgrader labs: release, collect, autograde, feedback, export.

    python -m course_utils.grading release            # solutions/ -> labs/ (nbgrader generate_assignment)
    python -m course_utils.grading collect --from DIR # DIR/<student>/<lab>.ipynb -> nbgrader/submitted/...
    python -m course_utils.grading autograde          # every submission, one student at a time
    python -m course_utils.grading feedback           # HTML feedback, hidden tests removed
    python -m course_utils.grading export             # grades.csv

Why a wrapper around nbgrader: `nbgrader autograde` exits 0 even when submissions fail, a submission that is not
valid JSON or kills its kernel leaves no grade at all, and the gradebook only knows students who submitted.
Here every submission is validated first, graded alone (one bad notebook cannot stop the batch), and the result
is read back from the gradebook -- the only place where the real score lives. A student who broke their notebook
gets 0 and a reason; the exit status is non-zero only when the grading itself broke (lab not released, database
unreadable, the lab's own setup cell failing, nbgrader failing for a reason no submission explains).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from sqlalchemy.exc import SAWarning
from nbgrader.preprocessors import (CheckCellMetadata, ClearOutput, GetGrades, NbGraderPreprocessor, OverwriteCells,
                                    OverwriteKernelspec)
from traitlets import Unicode

from .paths import REPO_ROOT, set_cache_env

LABS = ("lab01_memory_wall", "lab02_lora_from_scratch")
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


# ---------------------------------------------------------------------------------------------- environment

def prepare_environment(root=REPO_ROOT) -> dict:
    """Make nbgrader and the kernels it starts work from any shell: caches in the repo, venv bin/ on PATH
    (nbgrader runs `alembic` as a subprocess), the repo on PYTHONPATH (the labs import course_utils).
    Kernels inherit this process's environment, so setting os.environ here is what reaches them."""
    set_cache_env()
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    py_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in py_path:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *py_path])
    os.environ.setdefault("TQDM_DISABLE", "1")
    # One thread per kernel: the labs' tiny model is fastest that way, and a grader sharing its cores with other
    # jobs does not collapse (2 OpenMP threads on a busy 2-core machine ran a training cell 15x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return dict(os.environ)


# ---------------------------------------------------------------------------------------------- preprocessors

class RestoreDeletedCells(NbGraderPreprocessor):
    """Put back nbgrader cells (answers and tests) that a student deleted, taken from the released notebook.

    nbgrader's own add_missing_cells only restores test cells and fails when the answer cell before a deleted
    test was deleted too. A restored answer cell holds the stub, so its tests score 0 and every other part of
    the notebook is still graded. OverwriteCells runs next and restores the hidden tests of restored test cells.
    """

    release_directory = Unicode("labs", help="Released notebooks, relative to the course root.").tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        path = Path(self.release_directory) / info["assignment"] / f"{info['notebook']}.ipynb"
        if not path.exists():  # nbgrader runs from the course root; without a release there is nothing to copy
            self.log.warning("RestoreDeletedCells: no released notebook at %s", path)
            return nb, resources
        import nbformat

        released = nbformat.read(str(path), as_version=4)
        present = {_grade_id(c) for c in nb.cells} - {None}
        restored, previous_idx = [], -1
        for cell in released.cells:
            gid = _grade_id(cell)
            if gid is None:
                continue
            if gid in present:
                previous_idx = next(i for i, c in enumerate(nb.cells) if _grade_id(c) == gid)
                continue
            new = copy.deepcopy(cell)
            new.pop("id", None)
            nb.cells.insert(previous_idx + 1, new)
            previous_idx += 1
            restored.append(gid)
        if restored:
            self.log.warning("Restored deleted cells from the release: %s", ", ".join(restored))
        for i, cell in enumerate(nb.cells):  # nbformat >= 4.5 needs an id on every cell
            if nb.nbformat_minor >= 5 and "id" not in cell:
                cell["id"] = f"restored-{i}"
        return nb, resources


class DeduplicateCells(NbGraderPreprocessor):
    """nbgrader's DeduplicateIds leaves `nbgrader: {}` on a duplicated cell, which its own metadata check then
    rejects (schema version 0), failing the whole notebook. Like it, keep the last copy graded (the student's
    latest work); unlike it, turn the earlier copies into plain cells that still run."""

    def preprocess(self, nb, resources):
        seen = set()
        for cell in reversed(nb.cells):
            gid = _grade_id(cell)
            if gid is None:
                if "nbgrader" in cell.get("metadata", {}) and not cell.metadata.nbgrader.get("grade_id"):
                    del cell.metadata["nbgrader"]  # an empty or broken nbgrader entry: nothing to grade there
                continue
            if gid in seen:
                self.log.warning("Cell with id '%s' exists multiple times: earlier copy left ungraded", gid)
                del cell.metadata["nbgrader"]
                for key in ("deletable", "editable"):
                    cell.metadata.pop(key, None)
            seen.add(gid)
        return nb, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback shows each test cell without its hidden part, and failing hidden asserts without the quoted
    source lines (an IPython traceback prints the lines around the failing assert: the hidden test itself)."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            return cell, resources
        cell.source = _without_hidden(cell.source).rstrip() + "\n# (hidden tests ran here)"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources


SANITIZE_PREPROCESSORS = [ClearOutput, DeduplicateCells, OverwriteKernelspec, RestoreDeletedCells, OverwriteCells,
                          CheckCellMetadata]
FEEDBACK_PREPROCESSORS = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]


def _without_hidden(source: str) -> str:
    keep, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            keep.append(line)
    return "\n".join(keep)


def _grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


# ---------------------------------------------------------------------------------------------- the course

@dataclass
class Course:
    """Where things are; `root` is the repo for real grading and a temporary folder in tests."""

    root: Path
    config: object
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    reports: Path

    def api(self):
        from nbgrader.apps import NbGraderAPI

        api = NbGraderAPI(config=self.config)
        api.log.setLevel("ERROR")
        return api

    def gradebook(self):
        from nbgrader.api import Gradebook

        return Gradebook(self.config.CourseDirectory.db_url, self.config.CourseDirectory.course_id)


def load_course(root=REPO_ROOT, timeout: int | None = None, config_file=REPO_ROOT / "nbgrader_config.py") -> Course:
    """Read nbgrader_config.py, re-rooted at `root` (its folder names are relative, the db goes under root)."""
    from traitlets.config.loader import PyFileConfigLoader

    prepare_environment()
    root = Path(root).resolve()
    config_file = Path(config_file)
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: it maps nbgrader onto solutions/ and labs/. "
                                "Restore it with `git checkout -- nbgrader_config.py`.")
    cfg = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    cd = cfg.CourseDirectory
    cd.root = str(root)
    (root / "nbgrader").mkdir(parents=True, exist_ok=True)
    cd.db_url = "sqlite:///" + str(root / "nbgrader" / "gradebook.db")
    cfg.RestoreDeletedCells.release_directory = cd.release_directory
    if timeout is not None:
        cfg.Execute.timeout = int(timeout)
    return Course(root=root, config=cfg, source=root / cd.source_directory, release=root / cd.release_directory,
                  submitted=root / cd.submitted_directory, autograded=root / cd.autograded_directory,
                  feedback=root / cd.feedback_directory, reports=root / "nbgrader" / "reports")


# ---------------------------------------------------------------------------------------------- release / collect

def release(course: Course, labs=LABS, out=print) -> bool:
    """nbgrader generate_assignment for each lab: strips solutions and hidden tests, records the tests in the db."""
    ok = True
    api = course.api()
    for lab in labs:
        if not (course.source / lab / f"{lab}.ipynb").exists():
            out(f"{lab}: no {course.source.name}/{lab}/{lab}.ipynb -- build it with `python scripts/build_labs.py`")
            ok = False
            continue
        res = api.generate_assignment(lab, force=True, create=True)
        ok &= res["success"]
        out(f"{lab}: {'released to ' + str(course.release / lab) if res['success'] else 'FAILED'}")
        if not res["success"]:
            out(_last_lines(res.get("error", "") or res.get("log", "")))
    return ok


def collect(course: Course, inbox, labs=LABS, out=print) -> int:
    """Copy downloaded submissions into nbgrader's layout. Accepts <inbox>/<student>/<lab>.ipynb,
    <inbox>/<student>/<lab>/<lab>.ipynb and <inbox>/<student>_<lab>.ipynb. Returns the number copied."""
    inbox, n = Path(inbox), 0
    if not inbox.is_dir():
        raise FileNotFoundError(f"{inbox} is not a folder. Fix: pass the folder you downloaded the submissions to.")
    for lab in labs:
        found = {}
        for f in inbox.glob(f"*/{lab}.ipynb"):
            found[f.parent.name] = f
        for f in inbox.glob(f"*/{lab}/{lab}.ipynb"):
            found[f.parent.parent.name] = f
        for f in inbox.glob(f"*_{lab}.ipynb"):
            found[f.name[: -len(f"_{lab}.ipynb")]] = f
        for student, f in sorted(found.items()):
            dest = course.submitted / student / lab / f"{lab}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            n += 1
            out(f"{lab}  {student}: {f} -> {dest.relative_to(course.root)}")
    out(f"collected {n} submission(s)")
    return n


# ---------------------------------------------------------------------------------------------- autograde

@dataclass
class Result:
    lab: str
    student: str
    score: float
    max_score: float
    status: str            # graded | invalid | missing | crashed | error
    reason: str
    seconds: float = 0.0
    failed_cells: list = field(default_factory=list)


class GradingBroken(RuntimeError):
    """The grading itself cannot run (not a student's fault)."""


def students_of(course: Course, labs=LABS, roster=()) -> list[str]:
    """Everyone with a folder in submitted/, everyone already in the gradebook, everyone on the roster."""
    names = set(roster)
    if course.submitted.is_dir():
        names |= {p.name for p in course.submitted.iterdir() if p.is_dir() and not p.name.startswith(".")}
    with course.gradebook() as gb:
        names |= {s.id for s in gb.students}
    return sorted(names)


def autograde(course: Course, labs=LABS, students=None, roster=(), out=print) -> tuple[list[Result], list[str]]:
    """Grade every (lab, student); returns the results and the problems that mean the grading itself broke."""
    problems: list[str] = []
    results: list[Result] = []
    students = list(students) if students else students_of(course, labs, roster)
    with course.gradebook() as gb:
        for s in students:
            gb.update_or_create_student(s)  # a row for everyone, submitted or not
        released = {a.name for a in gb.assignments}
    api = course.api()
    for lab in labs:
        if lab not in released:
            problems.append(f"{lab} is not in the gradebook: run `python -m course_utils.grading release` first")
            out(f"{lab}: NOT RELEASED (no tests in the gradebook) -- run `python -m course_utils.grading release`")
            continue
        t_lab = time.perf_counter()
        lab_results = []
        for student in students:
            r = grade_one(course, api, lab, student, problems)
            lab_results.append(r)
            out(f"{lab}  {student:<14} {r.score:6.1f} / {r.max_score:<6.1f} {r.status:<8} {r.reason}  [{r.seconds:.1f}s]")
        results += lab_results
        _write_report(course, lab, lab_results)
        if lab_results:
            mean = sum(r.score for r in lab_results) / len(lab_results)
            bad = sum(r.status != "graded" for r in lab_results)
            out(f"{lab}: {len(lab_results)} students, mean {mean:.1f} / {lab_results[0].max_score:.1f}, "
                f"{bad} not gradable, {time.perf_counter() - t_lab:.1f}s")
    total = sum(r.score for r in results)
    out(f"TOTAL: {len(results)} submissions graded, {total:.1f} points awarded, "
        f"{len(problems)} grading problem(s)")
    for p in problems:
        out(f"GRADING PROBLEM: {p}")
    return results, problems


def grade_one(course: Course, api, lab: str, student: str, problems: list) -> Result:
    t0 = time.perf_counter()
    nb_path = course.submitted / student / lab / f"{lab}.ipynb"
    verdict = validate_submission(course, lab, nb_path)
    if verdict.status != "ok":
        r = _zero(course, lab, student, verdict.status, verdict.reason)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush chatter on new submissions
            res = api.autograde(lab, student, force=True, create=True)
        _write_log(course, lab, student, res)
        if res["success"]:
            r = _read_back(course, lab, student, verdict.notes)
            setup_error = _setup_cell_error(course, lab, student)
            if setup_error:
                problems.append(f"{lab}/{student}: the lab's own setup cell failed ({setup_error}); "
                                "the grading environment is broken (is course_utils importable by the kernel?)")
                r.status, r.reason = "error", f"setup cell failed: {setup_error}"
        else:
            status, reason, ours = _classify_failure(res.get("error", "") + res.get("log", ""))
            if ours:
                problems.append(f"{lab}/{student}: {reason}")
            r = _zero(course, lab, student, status, "; ".join([*verdict.notes, reason]))
    r.seconds = time.perf_counter() - t0
    return r


@dataclass
class Verdict:
    status: str            # ok | missing | invalid
    reason: str = ""
    notes: list = field(default_factory=list)


def validate_submission(course: Course, lab: str, nb_path: Path) -> Verdict:
    """Can nbgrader read it? Also notes deleted, duplicated and edited nbgrader cells for the report."""
    import nbformat

    rel = nb_path.relative_to(course.root) if nb_path.is_relative_to(course.root) else nb_path
    if not nb_path.exists():
        others = sorted(p.name for p in nb_path.parent.glob("*.ipynb")) if nb_path.parent.is_dir() else []
        hint = f" (found {', '.join(others)}: was it renamed?)" if others else ""
        return Verdict("missing", f"no notebook at {rel}{hint}")
    try:
        raw = json.loads(nb_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        return Verdict("invalid", f"{rel} is not UTF-8 text ({e.reason})")
    except json.JSONDecodeError as e:
        return Verdict("invalid", f"{rel} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    try:
        nb = nbformat.from_dict(raw)
        if nb.get("nbformat") != 4:
            raise ValueError(f"nbformat {nb.get('nbformat')!r}, expected 4")
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat raises several types; the message is what the student needs
        return Verdict("invalid", f"{rel} is JSON but not a valid notebook ({str(e).splitlines()[0][:120]})")
    notes = []
    released_path = course.release / lab / f"{lab}.ipynb"
    if released_path.exists():
        released = nbformat.read(str(released_path), as_version=4)
        want = {_grade_id(c): c for c in released.cells if _grade_id(c)}
        ids = [_grade_id(c) for c in nb.cells if _grade_id(c)]
        deleted = [g for g in want if g not in ids]
        dups = sorted({g for g in ids if ids.count(g) > 1})
        edited = [g for c in nb.cells if (g := _grade_id(c)) in want and want[g].metadata.nbgrader.get("locked")
                  and _without_hidden(c.source).strip() != _without_hidden(want[g].source).strip()]
        if deleted:
            notes.append(f"deleted cells restored from the release: {', '.join(deleted)}")
        if dups:
            notes.append(f"duplicated cells (extra copies ungraded): {', '.join(dups)}")
        if edited:
            notes.append(f"edited test cells restored: {', '.join(sorted(set(edited)))}")
    return Verdict("ok", notes=notes)


def _zero(course: Course, lab: str, student: str, status: str, reason: str) -> Result:
    """Score 0 in the gradebook for a submission nbgrader could not grade, and drop any stale autograded copy."""
    with course.gradebook() as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)
        sub = gb.update_or_create_submission(lab, student)
        for nb in sub.notebooks:
            for grade in nb.grades:
                grade.auto_score = 0
                grade.manual_score = None
                grade.needs_manual_grade = False
        gb.db.commit()
        max_score = float(sub.max_score)
    stale = course.autograded / student / lab
    if stale.exists():
        shutil.rmtree(stale, ignore_errors=True)
    return Result(lab, student, 0.0, max_score, status, reason)


def _read_back(course: Course, lab: str, student: str, notes: list) -> Result:
    """The real result: scores from the gradebook, reasons from the autograded notebook's error outputs."""
    import nbformat

    with course.gradebook() as gb:
        sub = gb.find_submission(lab, student)
        score, max_score = float(sub.score), float(sub.max_score)
        failed = [g.name for nb in sub.notebooks for g in nb.grades if (g.score or 0) < g.max_score]
    reasons = list(notes)
    graded_nb = course.autograded / student / lab / f"{lab}.ipynb"
    if graded_nb.exists():
        nb = nbformat.read(str(graded_nb), as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        for i, cell in enumerate(code_cells, 1):
            for o in cell.get("outputs", []):
                if o.get("output_type") != "error":
                    continue
                where = _grade_id(cell) or f"code cell {i}"
                if o.get("ename") == "CellTimeoutError":
                    timeout = course.config.Execute.timeout
                    reasons.append(f"{where} timed out after {timeout}s (an infinite loop?) and was interrupted")
                elif o.get("ename") == "SystemExit":
                    reasons.append(f"{where} called sys.exit()")
    if failed:
        reasons.append(f"failed: {', '.join(failed)}")
    return Result(lab, student, score, max_score, "graded", "; ".join(dict.fromkeys(reasons)) or "all tests passed",
                  failed_cells=failed)


def _setup_cell_error(course: Course, lab: str, student: str) -> str | None:
    """The first code cell is ours (imports, versions): if it fails, no student can pass -- a broken environment."""
    import nbformat

    path = course.autograded / student / lab / f"{lab}.ipynb"
    if not path.exists():
        return None
    nb = nbformat.read(str(path), as_version=4)
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    released = course.release / lab / f"{lab}.ipynb"
    if first is None or not released.exists():
        return None
    ours = next((c for c in nbformat.read(str(released), as_version=4).cells if c.cell_type == "code"), None)
    if ours is None or first.source != ours.source:
        return None  # the student edited the setup cell: their problem, graded as such
    for o in first.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}"
    return None


def _classify_failure(text: str) -> tuple[str, str, bool]:
    """(status, reason, is_grading_problem) for an autograde that nbgrader gave up on."""
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text.lower():
        return "crashed", "the kernel died (os._exit(), a crash or out of memory): nbgrader cannot grade the rest", False
    if "UnresponsiveKernelError" in text:
        return "crashed", "the kernel stopped responding and could not be interrupted", False
    if "NotJSONError" in text or "ValidationError" in text or "Notebook does not appear to be JSON" in text:
        return "invalid", "nbgrader could not read the notebook", False
    if "Inconsistent checksums" in text:
        return "invalid", "a test cell could not be restored (its metadata was edited)", False
    if "OperationalError" in text or "No assignment with ID" in text or "database" in text.lower():
        return "error", f"gradebook problem: {_last_lines(text, 1)}", True
    return "error", f"nbgrader failed: {_exception_line(text)}", True


def _exception_line(text: str) -> str:
    """The last 'SomeError: message' line of a log or traceback (nbgrader's own last line says 'see above')."""
    found = re.findall(r"^\s*([\w.]+(?:Error|Exception|Exit|Interrupt)\b.*)$", text, re.M)
    return found[-1].strip()[:300] if found else _last_lines(text, 1)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _write_log(course: Course, lab: str, student: str, res: dict) -> None:
    """nbgrader's log of one autograde, for the instructor who wants the details behind a one-line reason."""
    path = course.reports / "logs" / lab / f"{student}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(res.get("log", "") + ("\n" + res["error"] if res.get("error") else ""))


def _write_report(course: Course, lab: str, results: list[Result]) -> None:
    course.reports.mkdir(parents=True, exist_ok=True)
    path = course.reports / f"{lab}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({r.student: asdict(r) for r in results})
    path.write_text(json.dumps(old, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------------------------- feedback / export

def feedback(course: Course, labs=LABS, out=print) -> bool:
    """HTML feedback for every autograded submission (hidden tests removed; see HideHiddenTests)."""
    ok, api, n = True, course.api(), 0
    for lab in labs:
        students = sorted(p.parent.name for p in course.autograded.glob(f"*/{lab}")) if course.autograded.is_dir() else []
        for student in students:
            res = api.generate_feedback(lab, student, force=True)
            ok &= res["success"]
            n += res["success"]
            where = course.feedback / student / lab
            out(f"{lab}  {student:<14} {'-> ' + str(where.relative_to(course.root)) if res['success'] else 'FAILED: ' + _last_lines(res.get('error', ''), 1)}")
    out(f"TOTAL: {n} feedback file(s) written")
    return ok


def export(course: Course, path=None, labs=LABS, out=print) -> Path:
    """One row per (student, lab) from the gradebook, plus the status and reason of the last autograde run."""
    path = Path(path) if path else course.root / "grades.csv"
    reports = {}
    for lab in labs:
        f = course.reports / f"{lab}.json"
        reports[lab] = json.loads(f.read_text()) if f.exists() else {}
    rows = []
    with course.gradebook() as gb:
        released = {a.name for a in gb.assignments}
        for student in sorted(s.id for s in gb.students):
            for lab in labs:
                if lab not in released:
                    continue
                try:
                    sub = gb.find_submission(lab, student)
                    score, max_score = float(sub.score), float(sub.max_score)
                except Exception:  # MissingEntry: never submitted and never graded
                    score, max_score = 0.0, float(gb.find_assignment(lab).max_score)
                rep = reports[lab].get(student, {})
                rows.append(dict(student_id=student, lab=lab, score=score, max_score=max_score,
                                 status=rep.get("status", "not graded"), reason=rep.get("reason", "")))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["student_id", "lab", "score", "max_score", "status", "reason"])
        w.writeheader()
        w.writerows(rows)
    out(f"TOTAL: {len(rows)} row(s) -> {path}")
    return path


# ---------------------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    def common(parser, default):
        # accepted before or after the command; SUPPRESS keeps a subcommand from erasing the global value
        parser.add_argument("--course-dir", default=default(str(REPO_ROOT)), help="course root (default: this repo)")
        parser.add_argument("--lab", action="append", choices=LABS, default=default(None),
                            help="only this lab (repeatable); default: all")

    p = argparse.ArgumentParser(prog="python -m course_utils.grading", description=__doc__.split("\n\n")[0])
    common(p, lambda v: v)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name, help_):
        c = sub.add_parser(name, help=help_)
        common(c, lambda v: argparse.SUPPRESS)
        return c

    command("release", "regenerate labs/ from solutions/ (nbgrader generate_assignment)")
    c = command("collect", "copy downloaded submissions into nbgrader/submitted/")
    c.add_argument("--from", dest="inbox", required=True, help="folder holding <student>/<lab>.ipynb files")
    a = command("autograde", "grade every submission in nbgrader/submitted/, one student at a time")
    a.add_argument("--student", action="append", help="only this student (repeatable)")
    a.add_argument("--roster", help="text file, one student id per line: they get a row (0) even without a submission")
    a.add_argument("--timeout", type=int, help="seconds per cell (default: nbgrader_config.py)")
    command("feedback", "HTML feedback for every autograded submission")
    e = command("export", "write grades.csv from the gradebook")
    e.add_argument("--out", help="CSV path (default: grades.csv in the course root)")
    args = p.parse_args(argv)

    labs = tuple(args.lab or LABS)
    try:
        course = load_course(args.course_dir, timeout=getattr(args, "timeout", None))
        if args.cmd == "release":
            return 0 if release(course, labs) else 1
        if args.cmd == "collect":
            collect(course, args.inbox, labs)
            return 0
        if args.cmd == "autograde":
            roster = Path(args.roster).read_text().split() if args.roster else ()
            _, problems = autograde(course, labs, students=args.student, roster=roster)
            return 1 if problems else 0
        if args.cmd == "feedback":
            return 0 if feedback(course, labs) else 1
        if args.cmd == "export":
            export(course, args.out, labs)
            return 0
    except (FileNotFoundError, GradingBroken) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
