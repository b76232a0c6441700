"""Build the teaching notebooks from their percent-format sources and execute them, storing the outputs.

    python scripts/execute_notebooks.py                 # every notebooks/src/*.py
    python scripts/execute_notebooks.py 02 05           # only those whose name starts with 02 or 05
    python scripts/execute_notebooks.py --check         # fail if an .ipynb's cells differ from its source

Sources (notebooks/src/NN_name.py) are what we edit and review: `# %% [markdown]` starts a markdown cell,
`# %%` a code cell, `# %% tags=["nbval-ignore-output"]` adds cell tags. The executed .ipynb beside them is what
students open and what nbval compares against. Execution uses the same settings as the test suite
(no progress bars, network blocked), so stored outputs are exactly what nbval will see.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SRC_DIR = NB_DIR / "src"
_MARK = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse_percent(text: str):
    import nbformat

    cells, kind, tags, buf = [], None, [], []

    def flush():
        if kind is None:
            return
        src = "\n".join(buf).strip("\n")
        if kind == "markdown":
            src = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in src.splitlines())
            cell = nbformat.v4.new_markdown_cell(src)
        else:
            cell = nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in text.splitlines():
        m = _MARK.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("md") else "code"
            tags = json.loads(m.group("tags")) if m.group("tags") else []
            buf = []
        elif kind is not None:
            buf.append(line)
    flush()
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:03d}"  # stable ids: rebuilding a notebook changes only what really changed
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb, cwd: Path, timeout: int = 600):
    from nbclient import NotebookClient

    from course_utils.paths import notebook_env

    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(notebook_env())
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


def cells_differ(src_nb, built_nb) -> bool:
    a = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in src_nb.cells]
    b = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in built_nb.cells]
    return a != b


def main(argv=None) -> int:
    import nbformat

    sys.path.insert(0, str(ROOT))
    from course_utils.paths import set_cache_env

    set_cache_env()
    ap = argparse.ArgumentParser()
    ap.add_argument("only", nargs="*", help="name prefixes to build (default: all)")
    ap.add_argument("--check", action="store_true", help="only check that .ipynb cells match their sources")
    args = ap.parse_args(argv)
    sources = sorted(p for p in SRC_DIR.glob("*.py") if not args.only or any(p.stem.startswith(o) for o in args.only))
    bad = 0
    for src in sources:
        out = NB_DIR / f"{src.stem}.ipynb"
        nb = parse_percent(src.read_text())
        if args.check:
            if not out.exists() or cells_differ(nb, nbformat.read(out, as_version=4)):
                print(f"STALE  {out.relative_to(ROOT)}: run `python scripts/execute_notebooks.py {src.stem[:2]}`")
                bad += 1
            continue
        t0 = time.perf_counter()
        try:
            execute(nb, NB_DIR)
        except Exception as e:  # report and go on, so one broken notebook does not hide the others
            print(f"FAILED {src.stem}: {type(e).__name__}: {str(e)[-1500:]}")
            bad += 1
            continue
        nbformat.write(nb, out)
        print(f"ok     {out.relative_to(ROOT)}  {time.perf_counter() - t0:5.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
