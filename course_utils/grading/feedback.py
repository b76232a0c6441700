"""HTML feedback for every autograded submission, with no script and nothing raw from a student's outputs.

nbgrader renders it (GetGrades, then SanitizeFeedback, see preprocessors.py); the page it writes is then cleaned:
the template's own <script> blocks (MathJax, require.js: nothing the page needs offline) are removed, and the
check that no `<script` is left is part of writing it.
"""
from __future__ import annotations

import re

from .labs import LABS

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
_ACTIVE = re.compile(r"<(script|iframe|object|embed)\b", re.I)


def clean_html(text: str) -> str:
    text = _SCRIPT.sub("", text)
    if _ACTIVE.search(text):
        raise ValueError("feedback HTML still holds active content after cleaning")
    return text


def feedback(course, labs=LABS, out=print) -> bool:
    """nbgrader/feedback/<student>/<lab>/<lab>.html for every autograded submission."""
    ok, api, n = True, course.api(), 0
    for lab in labs:
        folders = sorted(p.parent.name for p in course.autograded.glob(f"*/{lab}")) if course.autograded.is_dir() else []
        for student in folders:
            try:
                res = api.generate_feedback(lab, student, force=True)
                written = res["success"]
                error = res.get("error", "") or res.get("log", "")
                for page in (course.feedback / student / lab).glob("*.html") if written else ():
                    try:
                        page.write_text(clean_html(page.read_text(encoding="utf-8")), encoding="utf-8")
                    except ValueError as e:  # never leave a page that could run code in a student's browser
                        page.unlink()
                        written, error = False, str(e)
            except OSError as e:
                written, error = False, str(e)
            ok &= written
            n += written
            where = course.feedback / student / lab
            lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
            out(f"{lab}  {student:<14} " + (f"-> {where.relative_to(course.root)}" if written
                                            else f"FAILED: {lines[-1] if lines else 'unknown error'}"))
    out(f"TOTAL: {n} feedback file(s) written")
    return ok
