"""Getting notebooks in: release a lab (nbgrader generate_assignment) and collect downloaded submissions."""
from __future__ import annotations

import shutil
from pathlib import Path

from .labs import LABS


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def release(course, labs=LABS, out=print) -> bool:
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


def collect(course, inbox, labs=LABS, out=print) -> int:
    """Copy downloaded submissions into nbgrader's layout. Accepts <inbox>/<student>/<lab>.ipynb,
    <inbox>/<student>/<lab>/<lab>.ipynb and <inbox>/<student>_<lab>.ipynb. Returns the number copied.
    Only the notebook is copied: nothing else a student put next to it reaches the grader."""
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
            if not f.is_file() or f.is_symlink():
                out(f"{lab}  {student}: {f} is not a regular file, skipped")
                continue
            dest = course.submitted / student / lab / f"{lab}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            n += 1
            out(f"{lab}  {student}: {f} -> {dest.relative_to(course.root)}")
    out(f"collected {n} submission(s)")
    return n
