"""One graded batch for all grading tests: the real labs and the red-team lab in a temporary course, every
honest, blank, broken and hostile submission, graded once with `--jobs 2` (each submission in its own sandbox).

Adding a lab to the batch is its line in course_utils.grading.LAB_TABLE: the batch grades every lab there with a
full and a blank submission (name some of its answers in submissions.PARTIAL for a partial one too).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from course_utils import grading as G
from course_utils.grading import sandbox

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import hostile  # noqa: E402
import redteam_lab  # noqa: E402
from submissions import Course as Builder, real_lab_submissions, write  # noqa: E402

TIMEOUT = 20            # seconds per cell for the real labs: cuts a loop, leaves room for a busy machine
ABSENT = "s99_absent"   # on the roster, never submits
TOY_HONEST = {"t01_full": "full", "t02_blank": "blank", "zz_full": "full", "t03_loop": "loop"}


def require_sandbox():
    why = sandbox.problem()
    if why:
        pytest.fail(f"grading tests need the sandbox: {why}", pytrace=False)


def build_labs_module():
    spec = importlib.util.spec_from_file_location("build_labs", ROOT / "scripts" / "build_labs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_course(root: Path, labs=G.LABS, toy=True, timeout=TIMEOUT):
    """A temporary course: the real labs' solutions copied, the red-team lab built, everything released."""
    for lab in labs:
        shutil.copytree(ROOT / "solutions" / lab, root / "solutions" / lab)
    if toy:
        from _cells import with_run_first_guards

        nb = build_labs_module().to_notebook(with_run_first_guards(redteam_lab.CELLS))
        (root / "solutions" / redteam_lab.NAME).mkdir(parents=True)
        nbformat.write(nb, str(root / "solutions" / redteam_lab.NAME / f"{redteam_lab.NAME}.ipynb"))
    course = G.load_course(root, timeout=timeout)
    assert G.release(course, [*labs, *([redteam_lab.NAME] if toy else [])], out=lambda *_: None)
    return course


def toy_notebook(builder: Builder, kind: str):
    if kind == "full":
        return builder.student_copy(redteam_lab.NAME)
    if kind == "blank":
        return builder.student_copy(redteam_lab.NAME, filled=set())
    return builder.with_answer(redteam_lab.NAME, "capital_sentence", "while True:\n    pass")


# ---------------------------------------------------------------------------------------------- snapshots

# Written while the batch runs by the tests on the other pytest worker (the browser test's JupyterLab, nbval's
# kernels), never by a graded kernel, which sees the whole tree read-only (sandbox.py): left out of the snapshots.
HARNESS_WRITES = (".cache/browser", ".cache/matplotlib", ".jupyter/runtime", ".jupyter/data", ".jupyter/modes",
                  ".jupyter/config/migrated", ".ipython/profile_default/history.sqlite")
HARNESS_DIRS = (".ipynb_checkpoints", ".pytest_cache")


def _harness_path(path: str) -> bool:
    rel = os.path.relpath(path, ROOT)
    return any(rel == w or rel.startswith(w + os.sep) or rel.startswith(w + "-") for w in HARNESS_WRITES)


def tree_state(*roots) -> dict:
    """path -> (size, mtime) of every file under the roots: what a planted .pyc, .pth or config edit changes."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in HARNESS_DIRS and not _harness_path(os.path.join(dirpath, d))]
            if os.path.basename(dirpath) == ".git":
                # what a planted file in .git could do lives in hooks/, info/ and config; objects, refs, logs and
                # the index change whenever anyone commits in another worktree of the same repository
                dirnames[:] = [d for d in dirnames if d in ("hooks", "info")]
                filenames = [f for f in filenames if f == "config"]
            for f in filenames:
                p = os.path.join(dirpath, f)
                if _harness_path(p):
                    continue
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def git_status() -> str:
    # --no-optional-locks: a plain `git status` refreshes .git/index, which the tree snapshot would see as a change
    out = subprocess.run(["git", "--no-optional-locks", "status", "--ignored", "--porcelain", "--untracked-files=all"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return "".join(line for line in out.splitlines(keepends=True)
                   if not any(part in HARNESS_DIRS for part in Path(line[3:].strip()).parts)
                   and not _harness_path(str(ROOT / line[3:].strip().rstrip("/"))))


def file_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def gradebook_state(course) -> dict:
    """What only the instructor writes: the tests' stored sources, the students, any manual score or bonus."""
    with course.gradebook() as gb:
        sources = {(c.name, c.notebook.assignment.name): (c.source, c.checksum)
                   for a in gb.assignments for nb in a.notebooks for c in nb.source_cells}
        grades = [(g.name, g.student.id, g.manual_score, g.extra_credit)
                  for a in gb.assignments for sub in a.submissions for nb in sub.notebooks for g in nb.grades]
        return {"sources": sources, "students": sorted(s.id for s in gb.students), "grades": grades}


def processes_with(marker: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"{p.name}: {cmd}")
    return found


# ---------------------------------------------------------------------------------------------- the batch

@dataclass
class Batch:
    course: object
    results: dict
    problems: list
    seconds: float
    lines: list
    before: dict
    after: dict

    def result(self, lab, student):
        return self.results[(lab, student)]


@pytest.fixture(scope="session")
def batch(tmp_path_factory):
    require_sandbox()
    saved = dict(os.environ)
    try:
        yield _grade(tmp_path_factory.mktemp("course"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _grade(root: Path) -> Batch:
    course = make_course(root)
    builder = Builder(root)
    for student, labs in real_lab_submissions(builder).items():
        for lab, spec in labs.items():
            write(root, student, lab, spec)
    for student, kind in TOY_HONEST.items():
        write(root, student, redteam_lab.NAME, lambda k=kind: toy_notebook(builder, k))
    for attack in hostile.ATTACKS:
        write(root, attack.student, attack.lab, lambda a=attack: a.build(builder, root))
    (root / "nbgrader/submitted/r02_file_next" / redteam_lab.NAME / "extra.html").write_text("<script>x</script>")

    def snapshot():
        return {"tree": tree_state(ROOT, sys.prefix, os.path.expanduser("~/.ipython")), "git": git_status(),
                "gradebook": gradebook_state(course), "submitted": file_hashes(course.submitted),
                "course": file_hashes(root / "solutions") | file_hashes(root / "labs")}

    before = snapshot()
    lines = []
    t0 = time.perf_counter()
    results, problems = G.autograde(course, [*G.LABS, redteam_lab.SPEC], roster=[ABSENT], out=lines.append, jobs=2)
    seconds = time.perf_counter() - t0
    after = snapshot()
    print(f"\ngraded {len(results)} (lab, student) pairs in {seconds:.0f}s with 2 jobs")
    print("\n".join(lines))
    return Batch(course, {(r.lab, r.student): r for r in results}, problems, seconds, lines, before, after)


@pytest.fixture(scope="session")
def toy_course(tmp_path_factory):
    """A course with only the red-team lab, released once: for tests that grade a few notebooks of their own
    (each test uses its own student names). Creating a gradebook runs nbgrader's migrations: seconds each."""
    require_sandbox()
    saved = dict(os.environ)
    try:
        yield make_course(tmp_path_factory.mktemp("toy"), labs=())
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def feedback_pages(batch):
    ok = G.feedback(batch.course, [*G.LABS, redteam_lab.NAME], out=lambda *_: None)
    return ok, sorted(batch.course.feedback.glob("*/*/*.html"))


@pytest.fixture(autouse=True)
def _restore_env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
