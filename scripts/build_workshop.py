"""The 90-minute workshop's path (docs/workshop.md), chained from the chapters' own sources, never copied.

    python scripts/build_workshop.py              # writes workshop/workshop.ipynb: the attendees' notebook, no outputs
    python scripts/build_workshop.py --check      # exit 1: stale, or a tagged section not in SECTIONS
    python scripts/build_workshop.py --run        # runs the path once (build/workshop/), times each block
    python scripts/build_workshop.py --slides     # --run, then the reveal.js deck build/workshop/workshop.slides.html
    python scripts/build_workshop.py --slides --update-doc   # also writes the measured times into docs/workshop.md
    python scripts/build_workshop.py --slides --assets DIR   # a deck that presents with no network (docs/workshop.md)

Which cells make the path is said in the chapters' sources (notebooks/src/NN_*.py), with cell tags that the chapter
editions never carry (scripts/build_notebooks.py leaves out every tag that starts with `workshop`):

    # %% [markdown] tags=["workshop"]        on a `## N.M` heading: the whole section joins the path
    # %% tags=["workshop"]                   on any other cell: that cell alone, typically a dependency (the
                                               imports, or a helper defined in a section the path skips)
    # %% [markdown] tags=["workshop"]        on a `###` heading outside a selected section: that subsection alone
                                               (SECTIONS names it by its section's number)
    # %% tags=["workshop-skip"]              a cell of a selected section that the path leaves out; on a `###`
                                               heading: that whole subsection
    workshop-slide, workshop-subslide, workshop-fragment, workshop-notes, workshop-hide
                                             where the reveal.js deck starts a slide, a sub-slide (down arrow), a
                                             fragment, speaker notes, or hides a cell (it still runs)

Without a slide tag, a section's heading starts a slide (a subsection's, a sub-slide), the cells after it continue
that slide, and a dependency cell is hidden (it runs, the room does not need to see it). Each chapter is a block of
the agenda: the path opens each block with a title slide, and puts the lab's slide after LAB_AFTER's block.

The path runs in one kernel, chapter after chapter, so a cell must find what it uses among the path's earlier cells
of the *same* chapter (a name another chapter defines may mean something else there). `--check` proves that
statically (each missing name, with the cell that defines it, to tag), and the test runs the path.

Adding a section: tag its heading `workshop` (and its dependencies), add it to SECTIONS, rebuild, `make slides`.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_notebooks as bn  # noqa: E402  (the chapters' own parser and edition rules)

ROOT = bn.ROOT
OUT = ROOT / "workshop" / "workshop.ipynb"
BUILD = ROOT / "build" / "workshop"
DOC = ROOT / "docs" / "workshop.md"

# Every section on the path, per chapter, as its heading numbers them. The path must hold exactly these (so a tag
# added or lost by accident fails `--check`); extend it when a chapter's sections are tagged (docs/workshop.md's
# agenda already has rows for 10 and 12).
SECTIONS = {
    "02": ["2.1", "2.2", "2.4", "2.6"],
    "05": ["5.1", "5.2", "5.3", "5.4"],
    "08": ["8.1", "8.2", "8.4"],
    "09": ["9.1", "9.2", "9.3", "9.4", "9.6"],
    "10": ["10.2"],
    "12": ["12.1", "12.3"],
}
LAB_NOTEBOOK = ROOT / "solutions" / "lab02_lora_from_scratch" / "lab02_lora_from_scratch.ipynb"
LAB_UNTIL = "## 4."  # the lab segment is every cell before this heading
LAB_AFTER = "05"  # the hands-on lab follows the LoRA idea: the layer the room just saw, written by hand
LAB = ("Lab · 15 minutes: write the LoRA layer yourself",
       "Open `labs/lab02_lora_from_scratch/lab02_lora_from_scratch.ipynb` and do sections **1-3**: how many "
       "parameters LoRA trains, the layer's init and forward, and where dropout goes. Each test cell checks your "
       "code on the spot and says what to fix. Done early? Section 4: merge and unmerge.")
SLIDE_TAGS = {"workshop-slide": "slide", "workshop-subslide": "subslide", "workshop-fragment": "fragment",
              "workshop-notes": "notes", "workshop-hide": "skip"}
KNOWN_TAGS = {"workshop", "workshop-skip", *SLIDE_TAGS}
_SECTION = re.compile(r"^## (\d+\.\d+)\b")
_BUILTINS = set(dir(builtins)) | {"display", "get_ipython", "__file__"}


@dataclass
class PathCell:
    chapter: str  # "02"
    index: int  # the cell's index in its chapter (its id there is cell-NNN)
    cell: bn.Cell
    slide: str  # reveal.js slide_type


def _defines_uses(code: str, where: str) -> tuple[set, set]:
    """Names a cell binds anywhere (assignments, imports, defs, arguments) and names it reads."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"{where}: not valid Python ({e.msg}, line {e.lineno})") from None
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, used


def chapter_path(src: Path) -> tuple[list[PathCell], list[str]]:
    """The cells of one chapter that join the path, and the selected sections' numbers, in order."""
    chapter, cells = src.stem[:2], bn.parse_percent(src.read_text(), src.name)
    picked, sections, in_section, in_sub, skipping, number = [], [], False, False, False, None
    for i, cell in enumerate(cells):
        where = f"{src.name}, cell {i} (cell-{i:03d})"
        unknown = [t for t in cell.tags if t.startswith(bn.WORKSHOP_TAG) and t not in KNOWN_TAGS]
        if unknown:
            raise ValueError(f"{where}: unknown workshop tag(s) {unknown}. Fix: use one of {sorted(KNOWN_TAGS)}.")
        heading = cell.source.split("\n", 1)[0] if cell.kind == "markdown" else ""
        if heading.startswith(("# ", "## ")):
            m = _SECTION.match(heading)
            number = m.group(1) if m else None
            in_section, in_sub, skipping = "workshop" in cell.tags, False, False
            if in_section:
                if not number:
                    raise ValueError(f"{where}: only numbered sections (`## N.M ...`) can join the path.")
                sections.append(number)
        elif heading.startswith("### "):
            skipping, in_sub = "workshop-skip" in cell.tags, "workshop" in cell.tags and not in_section
            if in_sub:
                if not number:
                    raise ValueError(f"{where}: this subsection is not inside a numbered section (`## N.M ...`).")
                if number not in sections:
                    sections.append(number)  # a subsection alone stands for its section in SECTIONS
        own = "workshop" in cell.tags
        if not (own or ((in_section or in_sub) and not skipping and "workshop-skip" not in cell.tags)):
            continue
        slides = [SLIDE_TAGS[t] for t in cell.tags if t in SLIDE_TAGS]
        if len(slides) > 1:
            raise ValueError(f"{where}: more than one slide tag {slides}. Fix: keep one.")
        default = ("slide" if heading.startswith("## ") or (in_sub and heading.startswith("### "))
                   else "subslide" if heading.startswith("### ") else "-" if in_section or in_sub else "skip")
        picked.append(PathCell(chapter, i, cell, slides[0] if slides else default))
    return picked, sections


def missing_names(src: Path, picked: list[PathCell]) -> list[str]:
    """What a path cell reads that no earlier path cell of its chapter defines, and where the chapter defines it."""
    text = src.read_text()
    cells = bn.parse_percent(text, src.name)
    lines = [n for n, line in enumerate(text.splitlines(), 1) if bn._CELL_MARK.match(line)]  # each cell's mark
    chosen, known, problems = {pc.index for pc in picked}, set(), []
    for i, cell in enumerate(cells):
        if cell.kind != "code":
            continue
        code = bn.student_code(cell.source, f"{src.name}, cell {i}")
        defined, used = _defines_uses(code, f"{src.name}, cell {i}")
        if i in chosen:
            for name in sorted(used - defined - known - _BUILTINS):
                at = next((j for j in range(i - 1, -1, -1) if cells[j].kind == "code"
                           and name in _defines_uses(cells[j].source, src.name)[0]), None)
                fix = (f"tag cell-{at:03d} (the cell that defines it, line {lines[at]}) with \"workshop\""
                       if at is not None else "no earlier cell defines it")
                problems.append(f"{src.name} cell-{i:03d} (line {lines[i]}) uses `{name}`, which no earlier path "
                                f"cell of the chapter defines: {fix}")
            known |= defined
    return problems


def _title(src: Path) -> str:
    first = bn.parse_percent(src.read_text(), src.name)[0].source.split("\n", 1)[0]
    return first.lstrip("# ").strip()


def path_cells() -> tuple[list, list[str]]:
    """(the path's cells: (kind, source, slide_type, id), problems): block titles, the chapters' cells, the lab."""
    out, problems = [], []
    out.append(("markdown", "# LoRA & QLoRA in 90 minutes\n\nThe workshop's path through the course: each block "
                "is a few sections of one chapter, run in order (the agenda is `docs/workshop.md`). Predict before "
                "each measurement: write your guess where it says `None  # your prediction`.", "slide", "title"))
    for src in bn.sources():
        chapter = src.stem[:2]
        picked, sections = chapter_path(src)
        if not picked and chapter not in SECTIONS:
            continue
        if sections != SECTIONS.get(chapter, []):
            problems.append(f"{src.name}: the sections tagged `workshop` are {sections}, but SECTIONS in "
                            f"scripts/build_workshop.py lists {SECTIONS.get(chapter, [])} for {chapter}. Fix: make "
                            "them agree (tag the headings, or extend SECTIONS).")
        problems += missing_names(src, picked)
        out.append(("markdown", f"# {_title(src)}\n\nSections {', '.join(sections)} of `notebooks/{src.stem}.ipynb` "
                    "(the chapter has the rest, and the exercises).", "slide", f"block-{chapter}"))
        for pc in picked:
            where = f"{src.name}, cell {pc.index}"
            if pc.cell.kind == "code":
                source = bn.student_code(pc.cell.source, where)
            else:
                source = bn._markdown(pc.cell.source, where, student=True)
            out.append((pc.cell.kind, source, pc.slide, f"ch{chapter}-{pc.index:03d}"))
        if chapter == LAB_AFTER:
            out.append(("markdown", f"# {LAB[0]}\n\n{LAB[1]}", "slide", "lab"))
    missing = sorted(set(SECTIONS) - {s.stem[:2] for s in bn.sources()})
    problems += [f"SECTIONS lists chapter {c}, which has no source in notebooks/src/" for c in missing]
    return out, problems


def notebook(cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    for kind, source, slide, cell_id in cells:
        c = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        c.id = cell_id
        c.metadata["slideshow"] = {"slide_type": slide}
        nb.cells.append(c)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def block_of(cell_id: str) -> str:
    return cell_id.split("-")[0].removeprefix("ch").removeprefix("block")


def block_seconds(nb) -> dict[str, float]:
    """Seconds each block's code cells spent running (from the kernel's own timestamps), in path order."""
    seconds = {}
    for c in nb.cells:
        t = c.metadata.get("execution", {})
        if c.cell_type == "code" and "iopub.execute_input" in t and "shell.execute_reply" in t:
            start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            key = block_of(c.id)
            seconds[key] = seconds.get(key, 0.0) + (end - start).total_seconds()
    return seconds


def lab_segment():
    """The lab's cells up to LAB_UNTIL, reference solution included: what the room writes, with its checks."""
    import nbformat

    nb = nbformat.read(LAB_NOTEBOOK, as_version=4)
    stop = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith(LAB_UNTIL))
    nb.cells = nb.cells[:stop]
    for c in nb.cells:
        c.id = f"lab-{c.id}"[:64]
    return nb


def run(nb, build: Path = BUILD):
    """Executes the attendees' path once, as a student does (stubs unanswered), and the lab segment with its
    reference solution (its checks must pass); returns the seconds each block computed."""
    build.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bn.execute(nb, build, keep_timing=True)
    lab = bn.execute(lab_segment(), LAB_NOTEBOOK.parent, keep_timing=True)
    seconds = {**block_seconds(nb), **block_seconds(lab)}
    seconds["total"] = sum(seconds.values())
    seconds["wall"] = time.perf_counter() - t0  # plus the kernel's start
    (build / "workshop.ipynb").write_text(bn.notebook_text(nb))
    (build / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in seconds.items()}, indent=1) + "\n")
    return seconds


SLIDE_ASSETS = {"reveal_url_prefix": "reveal.js", "require_js_url": "require.js", "jquery_url": "jquery.min.js"}


def slides(nb, assets: Path | None = None, build: Path = BUILD) -> Path:
    """The reveal.js deck of the executed path. By default the deck loads reveal.js, require.js and jQuery from
    nbconvert's CDNs; `assets` is a folder holding them (SLIDE_ASSETS: reveal.js/ is the reveal.js 4 package), copied
    next to the deck so that the folder presents with no network."""
    import shutil

    from nbconvert import SlidesExporter

    # notebook cells are wider and taller than a slide: a wider canvas, and a scroll bar where a slide overflows
    exporter = SlidesExporter(reveal_scroll=True, reveal_width="1280", reveal_number="c/t")
    if assets:
        missing = [name for name in SLIDE_ASSETS.values() if not (assets / name).exists()]
        if missing:
            raise FileNotFoundError(f"{assets} lacks {missing} (docs/workshop.md says where they come from)")
        if assets.resolve() != (build / "assets").resolve():
            shutil.copytree(assets, build / "assets", dirs_exist_ok=True)
        for trait, name in SLIDE_ASSETS.items():
            setattr(exporter, trait, f"assets/{name}")
    html, _ = exporter.from_notebook_node(nb)
    out = build / "workshop.slides.html"
    out.write_text(html)
    return out


def expected_slides(nb) -> int:
    """Slides plus sub-slides: what the deck must have."""
    return sum(c.metadata.get("slideshow", {}).get("slide_type") in ("slide", "subslide") for c in nb.cells)


def timing_table(seconds: dict[str, float]) -> str:
    rows = ["| block | sections | measured compute |", "|---|---|---|"]
    for chapter, sections in SECTIONS.items():
        if chapter in seconds:
            rows.append(f"| {chapter} | {', '.join(sections)} | {seconds[chapter]:.0f} s |")
        if chapter == LAB_AFTER:
            lab = f"{LAB_NOTEBOOK.stem}, sections before `{LAB_UNTIL}` (solved)"
            rows.append(f"| lab | {lab} | {seconds['lab']:.0f} s |")
    rows.append(f"| all | | {seconds['total']:.0f} s ({seconds['total'] / 60:.1f} min; {seconds['wall']:.0f} s with "
                "the kernel's start) |")
    return "\n".join(rows)


AGENDA = ("<!-- agenda: begin -->", "<!-- agenda: end -->")
MEASURED = ("<!-- measured: begin (scripts/build_workshop.py --update-doc) -->", "<!-- measured: end -->")


def agenda(text: str | None = None) -> list[dict]:
    """The doc's agenda rows: start (minutes), minutes, block, waiting (the measured cell, as written)."""
    text = DOC.read_text() if text is None else text
    rows = []
    for line in text[text.index(AGENDA[0]):text.index(AGENDA[1])].splitlines()[3:]:
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        hours, minutes = cols[0].split(":")
        rows.append({"start": 60 * int(hours) + int(minutes), "minutes": int(cols[1]), "block": cols[2],
                     "waiting": cols[-1]})
    return rows


def update_doc(seconds: dict[str, float]) -> None:
    """Writes the measured times into the doc: the agenda's waiting column and the table below it. The agenda quotes
    a measurement, not a guess."""
    text = DOC.read_text()
    a, b = text.index(MEASURED[0]) + len(MEASURED[0]), text.index(MEASURED[1])
    text = text[:a] + "\n" + timing_table(seconds) + "\n" + text[b:]
    a, b = text.index(AGENDA[0]), text.index(AGENDA[1])
    lines = text[a:b].split("\n")
    for i, line in enumerate(lines):
        cols = line.split("|")
        if len(cols) > 4 and cols[3].strip() in seconds:
            cols[-2] = f" {seconds[cols[3].strip()]:.0f} s "
            lines[i] = "|".join(cols)
    DOC.write_text(text[:a] + "\n".join(lines) + text[b:])


def main(argv=None) -> int:
    from course_utils.paths import set_cache_env

    set_cache_env()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the path against its sources")
    ap.add_argument("--run", action="store_true", help="also run the path once and time its blocks")
    ap.add_argument("--slides", action="store_true", help="run, then render the reveal.js deck")
    ap.add_argument("--assets", type=Path, default=None,
                    help="a folder with reveal.js/, require.js and jquery.min.js: the deck then needs no network")
    ap.add_argument("--update-doc", action="store_true", help="write the measured times into docs/workshop.md")
    args = ap.parse_args(argv)
    cells, problems = path_cells()
    for p in problems:
        print(f"PATH   {p}")
    if problems:
        return 1
    text = bn.notebook_text(notebook(cells))
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"STALE  {OUT.relative_to(ROOT)}: run `python scripts/build_workshop.py`")
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"ok     {OUT.relative_to(ROOT)}  {len(cells)} cells")
    if not (args.run or args.slides):
        return 0
    nb = notebook(cells)
    seconds = run(nb)
    print(timing_table(seconds))
    if args.update_doc:
        update_doc(seconds)
    if args.slides:
        out = slides(nb, args.assets)
        print(f"ok     {out.relative_to(ROOT)}  {expected_slides(nb)} slides")
    return 0


if __name__ == "__main__":
    sys.exit(main())
