"""What the instructor reads after a run: reports/<lab>.json, one log per submission, grades.csv."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .labs import LABS


@dataclass
class Result:
    lab: str
    student: str
    score: float
    max_score: float
    status: str            # graded | flagged | crashed | invalid | missing | error
    reason: str
    seconds: float = 0.0
    failed_cells: list = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.lab}  {self.student:<14} {self.score:6.1f} / {self.max_score:<6.1f} {self.status:<8} "
                f"{self.reason}  [{self.seconds:.1f}s]")


def write_log(course, lab: str, student: str, text: str) -> None:
    path = course.reports / "logs" / lab / f"{student}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_report(course, lab: str, results: list[Result]) -> None:
    course.reports.mkdir(parents=True, exist_ok=True)
    path = course.reports / f"{lab}.json"
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        old = {}
    old.update({r.student: asdict(r) for r in results})
    path.write_text(json.dumps(old, indent=1, sort_keys=True))


def export(course, path=None, labs=LABS, out=print) -> Path:
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
                except Exception:  # noqa: BLE001 - MissingEntry: never submitted and never graded
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
