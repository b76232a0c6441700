"""Build the nbgrader labs: the Python source in scripts/labs/ -> solutions/<lab>/<lab>.ipynb -> labs/<lab>/.

    python scripts/build_labs.py              # all labs: write, execute (outputs stored), release to labs/
    python scripts/build_labs.py lab01_memory_wall --no-release

Writing notebooks from Python keeps them reviewable and tidy (no stray metadata, ids or outputs from someone's
session). The hidden tests' expected values are computed here, from the reference code, and written into the
source notebook (scripts/labs/_expected.py): a graded kernel never imports the reference. Each solution notebook
is executed here, so its stored outputs are the ones nbval compares; the build fails if any cell stores an error
or writes to stderr. `release` is `nbgrader generate_assignment` (solutions
and hidden tests stripped, tests recorded in the gradebook for autograding).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "labs"))

from course_utils.grading import LABS, load_course, prepare_environment, release  # noqa: E402

LAB_SOURCES = ROOT / "scripts" / "labs"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def to_notebook(cells) -> nbformat.NotebookNode:
    """cells: (kind, source, meta) tuples from a lab source module, see scripts/labs/_cells.py."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for i, (kind, source, meta) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"{meta.get('grade_id', kind)}-{i:02d}".replace("_", "-")
        if "nbgrader" in meta:
            cell.metadata["nbgrader"] = meta["nbgrader"]
        if meta.get("tags"):
            cell.metadata["tags"] = list(meta["tags"])
        nb.cells.append(cell)
    return nb


def load_lab(lab: str):
    """The lab's cells, each test cell starting with a guard that names the cell to run first."""
    from _cells import with_run_first_guards

    path = LAB_SOURCES / f"{lab}.py"
    spec = importlib.util.spec_from_file_location(f"lab_source_{lab}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return with_run_first_guards(mod.CELLS)


def execute(nb, cwd: Path, timeout: int = 120):
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}})
    client.execute()
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {i} wrote to stderr: {out.text.strip()[:200]}")
    return problems


def build(lab: str, run: bool = True) -> float:
    out_dir = ROOT / "solutions" / lab
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = to_notebook(load_lab(lab))
    seconds = 0.0
    if run:
        t0 = time.perf_counter()
        problems = execute(nb, out_dir)
        seconds = time.perf_counter() - t0
        if problems:
            raise SystemExit(f"{lab}: the solution notebook must run clean:\n  " + "\n  ".join(problems))
    nbformat.validate(nb)
    nbformat.write(nb, str(out_dir / f"{lab}.ipynb"))
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("labs", nargs="*", metavar="LAB", help=f"default: all of {', '.join(LABS)}")
    p.add_argument("--no-run", action="store_true", help="write the notebooks without executing them")
    p.add_argument("--no-release", action="store_true", help="do not regenerate labs/")
    args = p.parse_args(argv)
    args.labs = args.labs or list(LABS)
    unknown = [lab for lab in args.labs if lab not in LABS]
    if unknown:
        p.error(f"unknown lab(s) {unknown}: choose from {', '.join(LABS)}")
    prepare_environment()
    # the environment nbval re-runs solutions in (offline, one thread, the same float kernels on every x86 CPU),
    # so the stored outputs are the ones the tests compare against
    from course_utils.runtime.paths import notebook_env

    os.environ.update(notebook_env())
    for lab in args.labs:
        seconds = build(lab, run=not args.no_run)
        print(f"{lab}: solutions/{lab}/{lab}.ipynb written" + (f", executed in {seconds:.1f}s" if seconds else ""))
    if not args.no_release:
        if not release(load_course(), args.labs):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
