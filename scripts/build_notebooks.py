"""Build both editions of every chapter from its percent-format source (notebooks/src/NN_name.py).

    python scripts/build_notebooks.py                # every chapter: both editions, the reference one executed
    python scripts/build_notebooks.py 02 05          # only the chapters whose name starts with 02 or 05
    python scripts/build_notebooks.py --student      # only the student editions (seconds: nothing is executed)
    python scripts/build_notebooks.py --check        # exit 1 if an edition differs from its source (the tests)

The two editions:
- notebooks/NN_name.ipynb, the STUDENT edition: no outputs; every solution region replaced by a stub, every
  model answer of an open question by "*Your answer:*". This is what `make lab` opens.
- solutions/notebooks/NN_name.ipynb, the REFERENCE edition: everything, executed, outputs stored. nbval re-runs it
  in the test suite and compares; instructors and self-learners read it.

The source: `# %% [markdown]` starts a markdown cell, `# %%` a code cell, `# %% tags=["nbval-ignore-output"]`
adds cell tags. Tags that start with `workshop` select and shape the 90-minute workshop's path
(scripts/build_workshop.py) and are left out of both chapter editions. Solution regions, as in the labs:

    # %%                                       a code cell
    ### BEGIN SOLUTION
    guess_gib = 13                             student edition: `guess_gib = None  # your prediction`
    ### END SOLUTION
    predict("7B fp16 weights (GiB)", guess_gib)

In a code cell each top-level assignment `name = ...` inside the region becomes `name = None  # your answer`
(`# your prediction` in a cell that calls predict); everything else inside is dropped (a region inside a
function body that leaves nothing becomes `pass`, so the function returns None: "not answered yet").
In a markdown cell the lines `# ### BEGIN SOLUTION` ... `# ### END SOLUTION` wrap a model answer: the student
edition shows "*Your answer:*" instead, the reference edition "*Model answer:*" and the answer.

Execution uses course_utils.paths.notebook_env, the environment nbval re-runs the notebooks in (offline, no
progress bars, portable float kernels), so the stored outputs are exactly what nbval will see.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = ROOT / "notebooks" / "src"
STUDENT_DIR = ROOT / "notebooks"
REFERENCE_DIR = ROOT / "solutions" / "notebooks"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_ANSWER_MD = "*Your answer:*"
REFERENCE_ANSWER_MD = "*Model answer:*"
WORKSHOP_TAG = "workshop"
_CELL_MARK = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")
_STUB = re.compile(r"^\s*\w+ = None  # your (answer|prediction)$|^\s*pass  # your answer$")


@dataclass
class Cell:
    kind: str  # "code" | "markdown"
    source: str
    tags: list = field(default_factory=list)


def parse_percent(text: str, where: str = "<source>") -> list[Cell]:
    """The cells of a percent-format source, markdown already stripped of its leading '# '."""
    cells, kind, tags, buf = [], None, [], []

    def flush():
        if kind is None:
            return
        src = "\n".join(buf).strip("\n")
        if kind == "markdown":
            src = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in src.splitlines())
        cells.append(Cell(kind, src, tags))

    for n, line in enumerate(text.splitlines(), 1):
        m = _CELL_MARK.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            try:
                tags = json.loads(m.group("tags")) if m.group("tags") else []
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}:{n}: cell tags are not a JSON list ({e}). "
                                 'Fix: write them as # %% tags=["nbval-ignore-output"]') from None
            buf = []
        elif kind is not None:
            buf.append(line)
    flush()
    return cells


def solution_regions(source: str, where: str = "<cell>") -> list[tuple[int, int]]:
    """(begin, end) line indices of each region's marker lines; the solution is the lines strictly between."""
    regions, start = [], None
    for i, line in enumerate(source.splitlines()):
        mark = line.strip()
        if mark == BEGIN:
            if start is not None:
                raise ValueError(f"{where}: a second {BEGIN} before {END}. Fix: close the first region.")
            start = i
        elif mark == END:
            if start is None:
                raise ValueError(f"{where}: {END} without {BEGIN}. Fix: open the region with {BEGIN}.")
            regions.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{where}: {BEGIN} is never closed. Fix: end the region with {END}.")
    return regions


def solution_lines(source: str, where: str = "<cell>") -> list[str]:
    """Every line inside a solution region (what must never reach the student edition)."""
    lines = source.splitlines()
    return [line for a, b in solution_regions(source, where) for line in lines[a + 1:b]]


def _assigned_names(region: list[str], where: str) -> list[str]:
    code = textwrap.dedent("\n".join(region))
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"{where}: the solution region is not complete Python ({e.msg}, line {e.lineno}). "
                         "Fix: put whole statements between the markers.") from None
    names = []

    def add(target):
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                add(t)

    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                add(t)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
            names.append(stmt.target.id)
    return list(dict.fromkeys(names))


def student_code(source: str, where: str = "<cell>") -> str:
    lines = source.splitlines()
    regions = solution_regions(source, where)
    if not regions:
        return source
    label = "your prediction" if re.search(r"^\s*predict\(", source, re.M) else "your answer"
    out, pos = [], 0
    for a, b in regions:
        out += lines[pos:a]
        indent = lines[a][: len(lines[a]) - len(lines[a].lstrip())]
        names = _assigned_names(lines[a + 1:b], where)
        out += [f"{indent}{name} = None  # {label}" for name in names]
        if not names and indent:
            out.append(f"{indent}pass  # your answer")  # keeps the enclosing block valid Python
        pos = b + 1
    out += lines[pos:]
    return "\n".join(out)


def _markdown(source: str, where: str, student: bool) -> str:
    lines = source.splitlines()
    out, pos = [], 0
    for a, b in solution_regions(source, where):
        out += lines[pos:a]
        out += [STUDENT_ANSWER_MD] if student else [REFERENCE_ANSWER_MD, *lines[a + 1:b]]
        pos = b + 1
    out += lines[pos:]
    return "\n".join(out)


def edition(cells: list[Cell], student: bool, where: str = "<source>"):
    """The notebook (nbformat v4, unexecuted) of one edition; cell ids are stable, the same in both editions."""
    import nbformat

    nb_cells = []
    for i, cell in enumerate(cells):
        here = f"{where}, cell {i}"
        if cell.kind == "markdown":
            c = nbformat.v4.new_markdown_cell(_markdown(cell.source, here, student))
        else:
            c = nbformat.v4.new_code_cell(student_code(cell.source, here) if student else cell.source)
        tags = [t for t in cell.tags if not t.startswith(WORKSHOP_TAG)]  # the workshop's, not the chapter's
        if tags:
            c.metadata["tags"] = tags
        c.id = f"cell-{i:03d}"  # stable: a rebuild changes only what really changed
        nb_cells.append(c)
    nb = nbformat.v4.new_notebook(cells=nb_cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def notebook_text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def execute(nb, cwd: Path, timeout: int = 600, keep_timing: bool = False):
    """Run every cell in the environment nbval uses; outputs are stored in `nb`, timing metadata only if asked."""
    from nbclient import NotebookClient

    from course_utils.paths import notebook_env

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(notebook_env())
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=keep_timing,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    for cell in nb.cells:
        if not keep_timing:
            cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _coalesced(cell.outputs)
    return nb


def _coalesced(outputs):
    """Consecutive prints to the same stream as one output: how the kernel chunks them varies from run to run."""
    merged = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if prev is not None and out.output_type == prev.output_type == "stream" and out.name == prev.name:
            prev.text += out.text
        else:
            merged.append(out)
    return merged


def _cells_key(nb) -> list:
    return [(c.cell_type, c.get("id"), c.source, c.metadata.get("tags", [])) for c in nb.cells]


def stale(src: Path) -> list[str]:
    """What is out of date for one source: [] when both editions match it."""
    import nbformat

    cells = parse_percent(src.read_text(), src.name)
    problems, fix = [], f"run `python scripts/build_notebooks.py {src.stem[:2]}` (or `make notebooks`)"
    student = STUDENT_DIR / f"{src.stem}.ipynb"
    if not student.exists() or student.read_text() != notebook_text(edition(cells, True, src.name)):
        problems.append(f"{student.relative_to(ROOT)} differs from {src.relative_to(ROOT)}: {fix}")
    reference = REFERENCE_DIR / f"{src.stem}.ipynb"
    if not reference.exists() or _cells_key(nbformat.read(reference, as_version=4)) != _cells_key(edition(cells, False)):
        problems.append(f"{reference.relative_to(ROOT)} differs from {src.relative_to(ROOT)}: {fix}")
    return problems


def sources(only=()) -> list[Path]:
    return sorted(p for p in SRC_DIR.glob("[0-9][0-9]_*.py") if not only or any(p.stem.startswith(o) for o in only))


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from course_utils.paths import set_cache_env

    set_cache_env()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("only", nargs="*", help="chapter name prefixes, e.g. 02 05 (default: every chapter)")
    ap.add_argument("--check", action="store_true", help="only check that both editions match their sources")
    ap.add_argument("--student", action="store_true", help="only write the student editions (no execution)")
    args = ap.parse_args(argv)
    bad = 0
    for src in sources(args.only):
        if args.check:
            for problem in stale(src):
                print(f"STALE  {problem}")
                bad += 1
            continue
        cells = parse_percent(src.read_text(), src.name)
        student = STUDENT_DIR / f"{src.stem}.ipynb"
        student.write_text(notebook_text(edition(cells, True, src.name)))
        print(f"ok     {student.relative_to(ROOT)}")
        if args.student:
            continue
        REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
        reference = REFERENCE_DIR / f"{src.stem}.ipynb"
        t0 = time.perf_counter()
        try:
            nb = execute(edition(cells, False, src.name), REFERENCE_DIR)
        except Exception as e:  # report and go on, so one broken chapter does not hide the others
            print(f"FAILED {src.stem}: {type(e).__name__}: {str(e)[-1500:]}")
            bad += 1
            continue
        reference.write_text(notebook_text(nb))
        print(f"ok     {reference.relative_to(ROOT)}  {time.perf_counter() - t0:5.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
