"""Grade one submission without touching the gradebook: validate, assemble, run in the sandbox, decide.

A test cell earns its points only if (1) its execute reply from the kernel says "ok" and it produced no error
output, (2) it ran within the cell and notebook time limits, and (3) the grader's integrity probe (probe.py) had
found nothing wrong in the kernel up to and including that cell. Everything here can run in a worker thread:
the result is written to the gradebook by the caller, one submission at a time.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import probe
from .assemble import Assembly, assemble, grade_id, validate_submission
from .kernel import Kernel, KernelStartError
from .labs import Lab
from .sandbox import Limits, Sandbox


@dataclass
class Graded:
    lab: str
    student: str
    status: str                       # graded | flagged | crashed | missing | invalid | error
    reason: str
    scores: dict = field(default_factory=dict)        # test grade id -> points earned
    max_scores: dict = field(default_factory=dict)    # test grade id -> points possible
    notebook: object = None           # the executed notebook (outputs already capped and stripped of HTML)
    problem: str | None = None        # set when the grading itself broke (not the student's fault)
    log: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [g for g, s in self.scores.items() if s < self.max_scores[g]]


@dataclass
class LabFiles:
    """What the grader reads once per lab: the release (skeleton) and the source (hidden tests)."""

    lab: Lab
    release: object
    source: object


def grade_submission(course, files: LabFiles, student: str, slot: int = 0, sandboxed: bool = True) -> Graded:
    t0 = time.monotonic()
    lab = files.lab
    path = course.paths(lab.name, student)["submitted"]
    verdict = validate_submission(course, lab.name, path)
    if verdict.status != "ok":
        g = Graded(lab.name, student, verdict.status, verdict.reason)
    else:
        student_nb = nbformat.read(str(path), as_version=4)
        asm = assemble(files.release, files.source, student_nb, lab)
        g = execute(asm, lab, course.limits_for(lab), slot, sandboxed)
        g.student = student
    points = {grade_id(c): float(c.metadata.nbgrader.get("points", 0)) for c in files.release.cells
              if c.metadata.get("nbgrader", {}).get("grade")}
    g.max_scores = points
    for gid in points:
        g.scores.setdefault(gid, 0.0)
    g.seconds = time.monotonic() - t0
    return g


def _where(nb, idx: int, role: str) -> str:
    gid = grade_id(nb.cells[idx])
    if gid:
        return gid
    n = sum(c.cell_type == "code" for c in nb.cells[:idx + 1])
    return f"code cell {n}" + (" (one you added)" if role == "added" else "")


def execute(asm: Assembly, lab: Lab, limits: Limits, slot: int = 0, sandboxed: bool = True) -> Graded:
    nb, log = asm.nb, []
    g = Graded(lab.name, "", "graded", "", notebook=nb)
    reasons, flags = list(asm.notes), list(asm.flags)
    graded_names = sorted({n for names in asm.graded_names.values() for n in names})
    box = Sandbox(limits, slot=slot) if sandboxed else _Unsandboxed(limits)
    tampered_at, stopped = None, None
    try:
        with Kernel(box, limits, sys.executable) as k:
            start = time.monotonic()  # the notebook's clock starts when its kernel is ready
            watch = probe.Watch()
            nonce, expr = probe.expression(graded_names, lab.reference, lab.off_limits, protected=asm.protected)
            watch.check(k.probe(expr), nonce, trusted=True)
            for idx, (cell, role) in enumerate(zip(nb.cells, asm.roles)):
                if cell.cell_type != "code":
                    continue
                where = _where(nb, idx, role)
                left = start + limits.notebook_timeout - time.monotonic()
                if stopped or left <= 0:
                    if stopped is None:
                        stopped = (f"the notebook ran past its {limits.notebook_timeout:g}s limit before {where}: "
                                   "the cells from there on did not run")
                    log.append(f"{where}: not run")
                    continue
                timeout = min(limits.cell_timeout, left)
                nonce = None
                if role in ("test", "answer", "added") and lab.reference and k.alive():
                    # watch for calls of the reference made by the student's code while this cell runs
                    nonce, arm = probe.expression(graded_names, lab.reference, lab.off_limits,
                                                  arm="test" if role == "test" else "cell")
                    k.probe(arm)
                run = k.run(cell.source, timeout)
                cell.outputs = [nbformat.from_dict(o) for o in run.outputs]
                cell.execution_count = run.execution_count
                log.append(f"{where}: {run.status} {run.ename} {run.seconds:.1f}s")
                if role == "setup" and run.status != "ok":
                    g.problem = (f"the lab's own setup cell failed ({run.ename or run.status}: {run.evalue[:200]}); "
                                 "the grading environment is broken (can the sandboxed kernel import course_utils?)")
                ok = run.status == "ok" and not any(o.get("output_type") == "error" for o in run.outputs)
                if run.status == "timeout":
                    if timeout < limits.cell_timeout:
                        stopped = (f"the notebook ran past its {limits.notebook_timeout:g}s limit in {where}: "
                                   "it was interrupted and the cells after it did not run")
                    else:
                        reasons.append(f"{where} timed out after {limits.cell_timeout:g}s (an infinite loop?) "
                                       "and was interrupted")
                elif run.status == "killed":
                    stopped = (f"{where} ran past its {timeout:g}s limit and ignored the interrupt: the kernel was "
                               "stopped and the cells after it did not run")
                elif run.status == "dead":
                    g.status = "crashed"
                    stopped = (f"the kernel died in {where} (os._exit(), a crash or out of memory): "
                               "the cells after it did not run")
                elif run.ename == "SystemExit":
                    reasons.append(f"{where} called sys.exit()")
                if k.alive():
                    nonce, expr = probe.expression(graded_names, lab.reference, lab.off_limits, nonce=nonce,
                                                   protected=asm.protected)
                    found = watch.check(k.probe(expr), nonce, trusted=role in ("setup", "provided", "test"))
                    if found and tampered_at is None:
                        tampered_at = idx
                        flags += [f"after {where}: {f}" for f in found]
                        log.append(f"integrity check after {where}: {found}")
                if role == "test":
                    counts = ok and (tampered_at is None or tampered_at > idx)
                    pts = float(cell.metadata.nbgrader.get("points", 0))
                    g.scores[grade_id(cell)] = pts if counts else 0.0
            g.log = "\n".join(log) + "\n--- kernel log ---\n" + k.log_tail()
    except KernelStartError as e:
        g.problem = str(e)
        g.status = "error"
        g.reason = f"grading problem: {e}"
        return g
    if stopped:
        reasons.append(stopped)
    if tampered_at is not None:
        reasons.append("tests after the tampering did not count")
    if flags:
        g.status = "flagged" if g.status == "graded" else g.status
        reasons.insert(0, "flagged for review: " + "; ".join(dict.fromkeys(flags)))
    failed = [gid for gid, s in g.scores.items() if s == 0]
    if failed:
        reasons.append(f"failed: {', '.join(failed)}")
    g.reason = "; ".join(dict.fromkeys(reasons)) or "all tests passed"
    return g


class _Unsandboxed(Sandbox):
    """The instructor's explicit opt-out: the kernel runs as the grader, with the grader's rights."""

    def __init__(self, limits: Limits):
        super().__init__(limits, slot=0, bwrap="")
        self.uid = None

    def prepare_rundir(self, rundir: Path, files=()) -> None:
        pass

    def command(self, argv, rundir):
        env = {**self.environment(home=str(rundir)), "TMPDIR": str(rundir)}
        return ["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]
