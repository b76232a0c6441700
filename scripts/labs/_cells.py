"""The four kinds of cell a lab is made of. Each returns (kind, source, metadata) for scripts/build_labs.py."""
from textwrap import dedent

SCHEMA = 3


def _src(text: str) -> str:
    return dedent(text).strip("\n")


def md(text: str):
    return ("markdown", _src(text), {})


def code(text: str, tags=()):
    """Provided code: students run it, nobody grades it."""
    return ("code", _src(text), {"tags": tags})


def answer(grade_id: str, text: str):
    """Where students write code; the lines between ### BEGIN/END SOLUTION become a stub in labs/."""
    meta = {"grade": False, "solution": True, "locked": False, "grade_id": grade_id, "schema_version": SCHEMA}
    return ("code", _src(text), {"grade_id": grade_id, "nbgrader": meta})


def tests(grade_id: str, points: int, visible: str, hidden: str = ""):
    """Autograder tests: `visible` is what students see and run; `hidden` only runs when grading."""
    source = _src(visible)
    if hidden:
        source += "\n\n### BEGIN HIDDEN TESTS\n" + _src(hidden) + "\n### END HIDDEN TESTS"
    meta = {"grade": True, "solution": False, "locked": True, "points": points, "grade_id": grade_id,
            "schema_version": SCHEMA}
    return ("code", source, {"grade_id": grade_id, "nbgrader": meta})


_SETUP = """
import platform

import torch
import transformers

import course_utils
{imports}

transformers.logging.disable_progress_bar()  # keep the stored outputs free of progress bars
torch.set_num_threads(1)  # the tiny course model is fastest on one thread, and gives the same numbers everywhere
print("python      ", ".".join(platform.python_version_tuple()[:2]))
print("torch       ", torch.__version__)
print("transformers", transformers.__version__)
print("course_utils", course_utils.__version__)
"""


def setup_cell(imports: str = ""):
    """Every lab's first cell: the lab's own imports, quiet progress bars, one thread, and the versions."""
    return code(_SETUP.format(imports=_src(imports)).replace("\n\n\n", "\n\n"))
