"""The two editions of every chapter (scripts/build_notebooks.py): in sync with the source, no solution line in the
student edition, the reference edition executed cleanly, and the template every chapter follows."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


build = _builder()


def student(src: Path) -> Path:
    return ROOT / "notebooks" / f"{src.stem}.ipynb"


def reference(src: Path) -> Path:
    return ROOT / "solutions" / "notebooks" / f"{src.stem}.ipynb"


def cells_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def test_every_chapter_has_both_editions():
    assert SOURCES and SOURCES[0].name == "00_setup.py"
    for src in SOURCES:
        assert student(src).exists() and reference(src).exists(), f"run `make notebooks` to build {src.stem}"
    built = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert built == {s.stem for s in SOURCES}, "every student edition has a source in notebooks/src/ and vice versa"


def test_editions_match_their_sources():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_notebooks.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the builder's rules, on small examples ------------------------------------------------------------------

def test_code_regions_become_stubs_and_markdown_answers_disappear():
    src = "\n".join([
        "# %% [markdown]", "# **Question.** Why?", "#", "# ### BEGIN SOLUTION", "# Because B = 0.", "# ### END SOLUTION",
        "# %%", "### BEGIN SOLUTION", "guess = 13", "note = 'scratch'", "print(guess)", "### END SOLUTION",
        'predict("p", guess)',
        "# %%", "def answer():", "    ### BEGIN SOLUTION", "    return 8", "    ### END SOLUTION",
        'exercise("e", answer, 8)',
        "# %%", "### BEGIN SOLUTION", "a, b = 1, 2", "### END SOLUTION", 'exercise("f", a + 0 if a else None, 1)',
    ])
    cells = build.parse_percent(src)
    s, r = build.edition(cells, student=True), build.edition(cells, student=False)
    assert s.cells[0].source == "**Question.** Why?\n\n*Your answer:*"
    assert r.cells[0].source == "**Question.** Why?\n\n*Model answer:*\nBecause B = 0."
    assert s.cells[1].source == 'guess = None  # your prediction\nnote = None  # your prediction\npredict("p", guess)'
    assert s.cells[2].source == 'def answer():\n    pass  # your answer\nexercise("e", answer, 8)'
    assert s.cells[3].source.startswith("a = None  # your answer\nb = None  # your answer\n")
    assert r.cells[1].source == cells[1].source, "the reference edition keeps the whole cell"
    assert [c.id for c in s.cells] == [c.id for c in r.cells] == ["cell-000", "cell-001", "cell-002", "cell-003"]


@pytest.mark.parametrize("bad, words", [
    ("# %%\n### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("# %%\nx = 1\n### END SOLUTION\n", "without ### BEGIN SOLUTION"),
    ("# %%\n### BEGIN SOLUTION\nx = (1,\n### END SOLUTION\n", "not complete Python"),
])
def test_broken_markers_are_named_with_the_fix(bad, words):
    with pytest.raises(ValueError, match="Fix:") as err:
        build.edition(build.parse_percent(bad), student=True)
    assert words in str(err.value)


# --- the student edition ------------------------------------------------------------------------------------

@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_no_solution_line_and_no_output_reaches_the_student_edition(src):
    source_cells = build.parse_percent(src.read_text(), src.name)
    cells = cells_of(student(src))
    assert len(cells) == len(source_cells)
    n_regions = 0
    for i, (cell, origin) in enumerate(zip(cells, source_cells)):
        body = text(cell)
        assert "BEGIN SOLUTION" not in body and "END SOLUTION" not in body, f"{src.stem} cell {i} shows a marker"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{src.stem} cell {i} stores output"
        regions = build.solution_regions(origin.source)
        n_regions += len(regions)
        lines = origin.source.splitlines()
        outside = {line for k, line in enumerate(lines) if not any(a <= k <= b for a, b in regions)}
        for line in body.splitlines():
            allowed = line in outside or (cell["cell_type"] == "code" and build._STUB.match(line)) \
                or (cell["cell_type"] == "markdown" and line == build.STUDENT_ANSWER_MD)
            assert allowed, f"{src.stem} cell {i}: {line!r} is neither the source outside a solution region nor a stub"
    assert n_regions, f"{src.stem} has no solution region: where do students answer?"


MENTION = re.compile(r"\b(?P<kind>chapters?|notebooks?|labs?)[ _]?(?P<nums>\d{2}(?:\s*(?:[-–,]|and|or|to)\s*\d{2})*)\b",
                     re.I)


def mentions(body: str) -> list[tuple[str, str]]:
    """("chapter", "07"), ("lab", "03"), ... for every chapter, notebook or lab a text names by number."""
    found = []
    for m in MENTION.finditer(body):
        kind = "lab" if m.group("kind").lower().startswith("lab") else "chapter"
        found += [(kind, n) for n in re.findall(r"\d{2}", m.group("nums"))]
    return found


def exists(kind: str, number: str) -> bool:
    if kind == "chapter":
        return any((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    return any(ROOT.glob(f"labs/lab{number}_*")) or any(ROOT.glob(f"solutions/lab{number}_*"))


def test_mentions_are_found():
    assert mentions("chapter 07, chapters 04–05, Notebook 09, lab03, Lab 03, labs 01 and 02") == [
        ("chapter", "07"), ("chapter", "04"), ("chapter", "05"), ("chapter", "09"), ("lab", "03"), ("lab", "03"),
        ("lab", "01"), ("lab", "02")]
    assert exists("chapter", "00") and not exists("chapter", "99") and exists("lab", "01") and not exists("lab", "99")


STUDENT_FACING = sorted([*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "solutions" / "notebooks").glob("*.ipynb"),
                         *(ROOT / "labs").rglob("*.ipynb"), *(ROOT / "solutions").glob("lab*/*.ipynb")])


@pytest.mark.parametrize("path", STUDENT_FACING, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_chapter_or_lab_a_notebook_names_exists(path):
    for i, cell in enumerate(cells_of(path)):
        outputs = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
        missing = [f"{k} {n}" for k, n in mentions(text(cell) + outputs) if not exists(k, n)]
        assert not missing, f"{path.relative_to(ROOT)} cell {i} names {missing}, which do not exist"


# --- the template every chapter follows -----------------------------------------------------------------------

def calls(src: Path, name: str) -> list[ast.Call]:
    tree = ast.parse("\n".join(line for line in src.read_text().splitlines() if not line.startswith("# %%")))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def first_arg(call: ast.Call) -> str:
    assert call.args and isinstance(call.args[0], ast.Constant), f"line {call.lineno}: name it with a string literal"
    return call.args[0].value


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_every_chapter_has_predictions_revealed_and_checked_exercises(src):
    predicted = [first_arg(c) for c in calls(src, "predict")]
    revealed = [first_arg(c) for c in calls(src, "reveal")]
    exercises = [first_arg(c) for c in calls(src, "exercise")]
    assert predicted, f"{src.stem}: no prediction"
    assert sorted(predicted) == sorted(revealed) and len(set(predicted)) == len(predicted), \
        f"{src.stem}: every prediction needs exactly one reveal: predict {predicted}, reveal {revealed}"
    assert len(set(exercises)) == len(exercises) >= 2, f"{src.stem}: at least two checked exercises, {exercises}"
    body = src.read_text()
    assert re.search(r"^# Runtime: ", body, re.M), f"{src.stem}: state the runtime at the top"
    assert "torch.set_num_threads(1)" in body, f"{src.stem}: one thread (2 threads stall on a busy 2-core machine)"
    for line in body.splitlines():
        assert not re.search(r"\bthe seed\b", line, re.I), f"{src.stem}: students never see 'the seed': {line!r}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_predictions_come_before_their_measurement(src):
    cells = build.parse_percent(src.read_text(), src.name)
    where = {}
    for i, cell in enumerate(cells):
        for kind in ("predict", "reveal"):
            for name in re.findall(rf'^{kind}\(\s*"([^"]+)"', cell.source, re.M):
                where[kind, name] = i
    for (kind, name), i in where.items():
        if kind == "predict":
            assert i < where["reveal", name], f"{src.stem}: {name!r} is revealed before it is predicted"
            assert build.solution_regions(cells[i].source), f"{src.stem}: {name!r}: the prediction has no answer region"


# --- the reference edition ------------------------------------------------------------------------------------

@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_reference_edition_executed_without_errors_or_warnings(src):
    for i, cell in enumerate(cells_of(reference(src))):
        if cell["cell_type"] != "code" or not text(cell).strip():
            continue
        assert cell.get("execution_count") is not None, f"{src.stem} cell {i} was not executed: run `make notebooks`"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{src.stem} cell {i} stores an error: {out.get('ename')}"
            if out.get("name") == "stderr":
                assert "Warning" not in "".join(out["text"]), f"{src.stem} cell {i} stores a warning: {''.join(out['text'])[:300]}"
        assert "execution" not in cell["metadata"], f"{src.stem} cell {i} stores timing metadata"
        streams = [o.get("name") if o["output_type"] == "stream" else None for o in cell.get("outputs", [])]
        assert not any(a and a == b for a, b in zip(streams, streams[1:])), \
            f"{src.stem} cell {i}: consecutive prints are one output (the builder coalesces them): rebuild it"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_reference_edition_answers_every_prediction_and_exercise(src):
    printed = "".join("".join(o.get("text", "")) for c in cells_of(reference(src)) for o in c.get("outputs", []))
    assert "⏳" not in printed, f"{src.stem}: the reference edition leaves a prediction or exercise unanswered"
    assert "❌" not in printed, f"{src.stem}: a reference answer is wrong"
    assert printed.count("✅") >= len(calls(src, "exercise"))


# The student edition running top to bottom with nothing answered is tests/test_browser.py's job: it runs every
# chapter in JupyterLab as a student does and checks every check says "not answered yet".

# --- what a student sees from the prediction API -------------------------------------------------------------

def test_reveal_shows_nothing_when_it_ends_a_cell_and_choices_are_offered(capsys):
    from course_utils.checks import predict, reveal

    predict("which", None, choices=["q,v", "all-linear"])
    assert "(one of ['q,v', 'all-linear'])" in capsys.readouterr().out
    predict("n", 1_000_000)
    verdict = reveal("n", 1_066_112, rtol=0.1)
    assert verdict == "close" and hasattr(verdict, "_ipython_display_") and verdict._ipython_display_() is None
    assert "you predicted 1,000,000, measured 1,066,112: close" in capsys.readouterr().out
