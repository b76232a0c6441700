"""The course as a student meets it: JupyterLab started by `python -m course_utils lab`, in headless Chromium.

For every chapter (notebooks/NN_*.ipynb, the edition `make lab` opens), in one page, one after another:
Kernel > Restart Kernel and Run All Cells..., then: every code cell ran, in order; no output holds a traceback
(widget outputs included, and errors the kernel sent while a widget was moving); every image loaded; the chapter's
title and section headings are on the page; no cell shows a warning. Then every control of every widget is moved
through its positions with the keyboard (a slider of more than 60 positions every 5th step, a dense sample;
COURSE_SLIDER_POSITIONS=100000 for every step), and no position may raise. Also: what the student mode shows on first load, and the
labs' messages for an unanswered, a wrong and a right answer.

Fails with one line where Chromium is missing (`apt-get install chromium`, or COURSE_CHROMIUM=/path/to/chromium).
On a failure a screenshot is kept in .cache/browser/ and its path is in the message. Times per chapter are
printed at the end of the module.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browser.jupyterlab import ARTIFACTS, CHROMIUM_ENV, LabPage, LabServer, chromium_path, launch_browser

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LABS = sorted((ROOT / "labs").glob("lab*/lab*.ipynb"))

pytestmark = pytest.mark.slow

TIMES: dict[str, dict[str, float]] = {}
SWEPT: dict[str, dict[str, tuple[int, int]]] = {}  # chapter -> control -> (positions visited, positions)
SLIDER_POSITIONS_ENV = "COURSE_SLIDER_POSITIONS"  # sliders with more positions are sampled (default 60)


@pytest.fixture(scope="module")
def lab(request):
    """One JupyterLab (student mode, as `make lab` starts it) and one page for the whole module."""
    import shutil

    if chromium_path() is None:  # a missing browser is a broken dependency: it fails, it never skips
        pytest.fail(f"no Chromium found. Fix: `apt-get install chromium` (or set {CHROMIUM_ENV}=/path/to/chromium)")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    before = notebook_hashes()
    env = dict(os.environ)
    env.pop("TQDM_DISABLE", None)  # a student sees the progress bars (they are widgets too)
    t0 = time.perf_counter()
    with LabServer(ARTIFACTS, "lab", env) as server, sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        lab = LabPage(page, server, slider_positions=int(os.environ.get(SLIDER_POSITIONS_ENV, 60)))
        lab.goto(server.printed_url())
        lab.landing = first_load(lab)
        TIMES["(server start and first load)"] = {"run": time.perf_counter() - t0}
        yield lab
        browser.close()
    report_times(request.config)
    changed = [p for p, h in notebook_hashes().items() if before.get(p) != h]
    assert not changed, f"the browser test changed the course's notebooks (autosave?): {changed}"


def notebook_hashes() -> dict[str, str]:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in [*CHAPTERS, *LABS]}


def first_load(lab: LabPage) -> dict:
    """What the student sees right after opening the printed URL, before anything else is clicked."""
    page = lab.page
    page.locator(".jp-DirListing-itemName").first.wait_for()
    lab.watch()
    items = page.locator(".jp-DirListing-itemName").all_text_contents()
    page.locator(".jp-BreadCrumbs-home").click()  # the repo root, where solutions/ and tests/ live
    page.locator(".jp-DirListing-itemName", has_text="course_utils").wait_for()
    root_items = page.locator(".jp-DirListing-itemName").all_text_contents()
    lab.menu("Nbgrader")
    nbgrader_menu = page.locator(".lm-Menu").last.locator(".lm-Menu-itemLabel").all_text_contents()
    page.keyboard.press("Escape")
    return {
        "current": page.evaluate("() => window.jupyterapp.shell.currentWidget.context.path"),
        "notebooks_listing": items,
        "root_listing": root_items,
        "nbgrader_menu": nbgrader_menu,
        "create_assignment": page.locator("text=Create Assignment").count(),
        "notifications": page.locator(".Toastify__toast").all_text_contents(),
        "fetch_news": lab.server.api("lab/api/settings/@jupyterlab/apputils-extension:notification")[
            "schema"]["properties"]["fetchNews"]["default"],
    }


def report_times(config) -> None:
    """Seconds per chapter, printed at the end of the module (and kept in .cache/browser/times.txt)."""
    if not TIMES:
        return
    lines = ["", "browser test, seconds:                run all   widget sweep"]
    lines += [f"  {name:<36} {t.get('run', 0):6.1f}   {t.get('sweep', 0):6.1f}" for name, t in TIMES.items()]
    lines.append(f"  {'total':<36} {sum(sum(t.values()) for t in TIMES.values()):6.1f}")
    lines += [f"  {chapter} widget positions visited: " + ", ".join(f"{label} {v}/{n}" for label, (v, n) in c.items())
              for chapter, c in SWEPT.items() if c]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "times.txt").write_text("\n".join(lines) + "\n")
    tr, capman = (config.pluginmanager.get_plugin(n) for n in ("terminalreporter", "capturemanager"))
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            for line in lines:
                tr.write_line(line)


def fail_with_screenshot(lab: LabPage, name: str, problems: list[str]) -> None:
    if problems:
        shot = lab.screenshot(name)
        log = lab.server.log_path
        pytest.fail("\n".join(problems) + f"\nscreenshot: {shot}\nJupyterLab's log: {log}", pytrace=False)


def source_headings(path: Path) -> list[str]:
    """The title and the section headings (# and ## lines) of a notebook's markdown cells."""
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            out += [m.strip() for m in re.findall(r"^##? (.+)$", "".join(cell["source"]), re.M)]
    return out


def _plain(text: str) -> str:
    """Markdown heading -> the text the browser shows (no emphasis marks or code ticks)."""
    return re.sub(r"[*_`]", "", re.sub(r"\$[^$]*\$", "", text)).strip()


# ------------------------------------------------------------------------------------------------ student mode

def test_make_lab_lands_on_chapter_00_in_student_mode(lab):
    seen = lab.landing
    problems = []
    if seen["current"] != "notebooks/00_setup.ipynb":
        problems.append(f"the printed URL opened {seen['current']!r}, not notebooks/00_setup.ipynb")
    if "00_setup.ipynb" not in seen["notebooks_listing"]:
        problems.append(f"the file browser does not start in notebooks/: {seen['notebooks_listing']}")
    for hidden in ("solutions", "tests", "nbgrader_config.py"):
        if hidden in seen["root_listing"]:
            problems.append(f"the student's file browser shows {hidden}: {seen['root_listing']}")
    for shown in ("notebooks", "labs", "course_utils"):
        if shown not in seen["root_listing"]:
            problems.append(f"the student's file browser lacks {shown}: {seen['root_listing']}")
    if any("Formgrader" in item or "Course" in item for item in seen["nbgrader_menu"]):
        problems.append(f"the Nbgrader menu offers instructor tools to students: {seen['nbgrader_menu']}")
    if seen["create_assignment"]:
        problems.append("the Create Assignment sidebar is there in student mode")
    if any("news" in n.lower() for n in seen["notifications"]) or seen["fetch_news"] != "false":
        problems.append(f"JupyterLab asks about Jupyter news (fetchNews={seen['fetch_news']!r}): {seen['notifications']}")
    fail_with_screenshot(lab, "student-mode", problems)


# ------------------------------------------------------------------------------------------------ chapters

@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_in_the_browser(lab, path):
    rel = path.relative_to(ROOT).as_posix()
    lab.open(rel)
    try:
        run_s = lab.restart_and_run_all()
        problems = chapter_problems(lab.report(), path)
        t0 = time.perf_counter()
        swept = lab.sweep_widgets()
        TIMES[path.stem] = {"run": run_s, "sweep": time.perf_counter() - t0}
        SWEPT[path.stem] = {label: (s["visited"], s["positions"]) for label, s in swept.items()}
        problems += [f"widget control {label!r}: {len(s['errors'])} of {s['visited']} positions raise, at "
                     f"{', '.join(str(v) for v, _ in s['errors'][:8])}{', ...' if len(s['errors']) > 8 else ''}: "
                     f"{s['errors'][0][1]}" for label, s in swept.items() if s["errors"]]
        fail_with_screenshot(lab, path.stem, problems)
    finally:
        lab.close()


def chapter_problems(rep: dict, path: Path) -> list[str]:
    problems = []
    code = [c for c in rep["code"] if not c["empty"]]
    counts = [c["count"] for c in code]
    if counts != list(range(1, len(code) + 1)):
        missing = [c["index"] for c in code if c["count"] is None]
        problems.append(f"code cells did not all run in order: execution counts {counts}"
                        + (f" (cells {missing} did not run)" if missing else ""))
    for c in rep["code"]:
        for out in c["outputs"]:
            if out.get("output_type") == "error":
                problems.append(f"cell {c['index']}: {out['ename']}: {out['evalue']}")
    problems += [f"the kernel sent an error: {e}" for e in rep["kernelErrors"]]
    problems += [f"an output shows a traceback: {t[:400]}" for t in rep["outputText"] if "Traceback" in t]
    for c in rep["code"]:
        for out in c["outputs"]:
            text = "".join(out.get("text", "")) if out.get("name") == "stderr" else ""
            if "warning" in text.lower():
                problems.append(f"cell {c['index']} shows a warning: {text[:400]}")
    printed = "".join(rep["outputText"])  # the student edition, nothing answered: every check waits, none passes
    if "not answered yet" not in printed or "✅" in printed:
        problems.append("with nothing answered, the checks should say 'not answered yet' and never pass")
    broken = [img["src"] for img in rep["images"] if not img["ok"]]
    if broken:
        problems.append(f"{len(broken)} of {len(rep['images'])} images did not load: {broken}")
    shown = {_plain(h) for h in rep["headings"]}
    absent = [h for h in source_headings(path) if _plain(h) not in shown]
    if absent:
        problems.append(f"headings not rendered: {absent}")
    return problems


# ------------------------------------------------------------------------------------------------ labs

# What the labs' own messages say (scripts/labs): an unanswered stub, and a test cell run before its answer cell.
STUB_SAYS = "replace this line with your code"
RUN_FIRST_SAYS = "is not defined yet: run"

# Per lab, its first answer cell (grade id), a wrong answer for it and what its test says about that answer.
# The right answer comes from the lab's solution (solutions/<lab>/<lab>.ipynb). A new lab adds a row.
WRONG_ANSWERS = {
    "lab01_memory_wall": ("bytes_per_param", "def bytes_per_param(dtype):\n    return 8\n",
                          "fp32 = 32 bits; how many bytes is that?"),
    "lab02_lora_from_scratch": ("lora_parameter_count", "n_full = 128 * 128\nn_lora = 8 * 128\n",
                                "A has r x in entries and B has out x r"),
    "lab03_nf4": ("nf4_codebook", "def nf4_codebook():\n    return torch.linspace(-1, 1, 16)\n",
                  "one level is exactly 0.0"),
    "lab04_qlora": ("quantize_base", "model = copy.deepcopy(base)\n",
                    "replaces each by an NF4Linear"),
    "lab05_failure_diagnosis": ("diagnose_1", 'diagnosis_1 = "A"\n', "with capital letters from the list of faults"),
}


def lab_cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def grade_id(cell) -> str | None:
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


def solution_source(lab: str, gid: str) -> str:
    for cell in lab_cells(ROOT / "solutions" / lab / f"{lab}.ipynb"):
        if grade_id(cell) == gid:
            return "".join(cell["source"])
    raise AssertionError(f"solutions/{lab} has no cell {gid!r}")


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.parent.name)
def test_lab_messages(lab, path):
    """What a student sees from the first task's test cell: run too early, unanswered, answered wrong, right."""
    name = path.parent.name
    assert name in WRONG_ANSWERS, f"{name}: add its first task to WRONG_ANSWERS (grade id, a wrong answer, the hint)"
    gid, wrong, hint = WRONG_ANSWERS[name]
    cells = lab_cells(path)
    answer = next(i for i, c in enumerate(cells) if grade_id(c) == gid)
    test = next(i for i, c in enumerate(cells) if i > answer and c["metadata"].get("nbgrader", {}).get("grade"))
    lab.open(path.relative_to(ROOT).as_posix())
    try:
        t0 = time.perf_counter()
        for i, cell in enumerate(cells[:answer]):
            if cell["cell_type"] == "code":
                assert "Error" not in lab.run_cell(i), f"{name}: setup cell {i} fails"
        seen = {"too early": lab.run_cell(test)}
        seen["unanswered"] = lab.run_cell(answer) + lab.run_cell(test)
        seen["wrong"] = lab.run_cell(answer, wrong) + lab.run_cell(test)
        seen["right"] = lab.run_cell(answer, solution_source(name, gid)) + lab.run_cell(test)
        TIMES[name] = {"run": time.perf_counter() - t0}
        expect = {"too early": ("NameError", RUN_FIRST_SAYS), "unanswered": ("NotImplementedError", STUB_SAYS),
                  "wrong": (hint,)}
        problems = [f"{case}: expected {' ... '.join(map(repr, words))}, the student sees: {seen[case][:300]!r}"
                    for case, words in expect.items() if not all(w in seen[case] for w in words)]
        if "Error" in seen["right"]:
            problems.append(f"right answer: the test fails: {seen['right'][:300]!r}")
        fail_with_screenshot(lab, name, problems)
    finally:
        lab.close()
