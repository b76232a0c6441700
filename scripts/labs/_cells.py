"""The four kinds of cell a lab is made of. Each returns (kind, source, metadata) for scripts/build_labs.py."""
import ast
import builtins
import re
from textwrap import dedent

SCHEMA = 3

# Every lab's "How this lab is graded" paragraph ends with this (JupyterLab 4's menu names).
GRADING_NOTE = (
    "Do not delete or edit the provided cells or the test cells: when grading, every cell of the lab is put back "
    "as released and only your answer cells (and cells you added) are taken from your notebook. An answer may use "
    "what the provided cells import, but not the course's own solution of its task (importing it scores the answer "
    "as not answered), and answers that reach into the notebook's machinery (IPython hooks, `exec`, changing "
    "modules or the test helpers) are not run. Before you submit, run *Kernel → Restart Kernel and Run All "
    "Cells...* and check that every test cell passes.")


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


def tests(grade_id: str, points: int, visible: str, hidden: str = "", expected: dict | None = None):
    """Autograder tests: `visible` is what students see and run; `hidden` only runs when grading.

    `expected` ({name: value}, computed when the lab is built) is written as literals at the top of the hidden
    part: what the hidden tests compare with never has to be imported inside the student's kernel."""
    source = _src(visible)
    if hidden:
        literals = "".join(f"{k} = {v!r}\n" for k, v in (expected or {}).items())
        source += "\n\n### BEGIN HIDDEN TESTS\n" + literals + _src(hidden) + "\n### END HIDDEN TESTS"
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


# ---------------------------------------------------------------------------------------------- run-first guards

def _defines(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        else:
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _uses(source: str) -> list[str]:
    """Names a test reads that it does not define itself, in order of first use."""
    tree = ast.parse(source)
    own = _defines(source) | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args}
    seen = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in own and n.id not in seen \
                and not hasattr(builtins, n.id):
            seen.append(n.id)
    return seen


def with_run_first_guards(cells):
    """Start each test cell with a check that names the cell to run first, instead of a bare NameError.

    For each name the visible test reads, the guard names the latest earlier cell defining it: "the first code
    cell (imports)", "your answer to Task 2", or "the code cells of section 7"."""
    out, defined, task, section, first_code = [], {}, None, None, True
    for kind, source, meta in cells:
        if kind == "markdown":
            m = re.search(r"\*\*Task (\d+(?:\.\d+)*)\.?\*\*", source)
            h = re.search(r"^## (\d+)\.", source, re.M)
            section = h.group(1) if h else section
            task = m.group(1) if m else None if h else task  # a new section without a task has none
        elif "nbgrader" in meta and meta["nbgrader"].get("grade"):
            visible = source.split("### BEGIN HIDDEN TESTS")[0]
            where = {n: defined[n] for n in _uses(visible) if n in defined}
            if where:
                guard = (f"for _name, _cell in {where!r}.items():\n"
                         "    if _name not in globals():\n"
                         "        raise NameError(f\"{_name} is not defined yet: run {_cell} first "
                         "(or Run > Run All Above Selected Cell)\")\n\n")
                source = guard + source
        else:
            if first_code:
                label = "the first code cell (imports)"
            elif "nbgrader" in meta:
                label = (f"your answer to Task {task}" if task else f"your answer in section {section}" if section
                         else "the answer cell above")
            else:
                label = f"the code cells of section {section}" if section else "the code cells above"
            for name in _defines(source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")):
                defined[name] = label
            first_code = False
        out.append((kind, source, meta))
    return out
