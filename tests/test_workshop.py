"""The 90-minute workshop (docs/workshop.md): the path chained from the chapters' sources runs end to end within the
compute budget, its slides build, the agenda adds up, the readiness line, and an install with no network."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 8 * 60  # the most of the 90 minutes the room may spend waiting for compute


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "scripts"))
ws = _module("build_workshop")


def test_path_matches_the_chapters_and_every_name_has_its_cell():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_workshop.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    found = {src.stem[:2]: ws.chapter_path(src)[1] for src in ws.bn.sources()}
    assert {c: s for c, s in found.items() if s} == ws.SECTIONS


def test_workshop_tags_stay_out_of_the_chapter_editions():
    for nb in [*(ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"), *(ROOT / "solutions" / "notebooks").glob("*.ipynb")]:
        tags = {t for c in json.loads(nb.read_text())["cells"] for t in c["metadata"].get("tags", [])}
        assert not {t for t in tags if t.startswith("workshop")}, nb.name


def test_a_missing_dependency_names_the_cell_to_tag(tmp_path):
    src = tmp_path / "77_demo.py"
    src.write_text(textwrap.dedent('''\
        # %% [markdown]
        # # 77 · Demo
        # %%
        import math
        helper = 3
        # %% [markdown] tags=["workshop"]
        # ## 77.1 A section
        # %%
        print(math.pi * helper)
        # %% [markdown]
        # ### An aside tagged out
        # %%
        print("slow")
        '''))
    cells, sections = ws.chapter_path(src)
    assert sections == ["77.1"] and [c.slide for c in cells] == ["slide", "-", "subslide", "-"]
    problems = ws.missing_names(src, cells)
    assert len(problems) == 2 and all("tag cell-001" in p for p in problems), problems
    aside = "# %% [markdown]\n# ### An aside"
    src.write_text(src.read_text().replace("# %%\nimport math", '# %% tags=["workshop"]\nimport math')
                   .replace(aside, aside.replace("]", '] tags=["workshop-skip"]', 1)))
    cells, _ = ws.chapter_path(src)
    assert ws.missing_names(src, cells) == [] and [c.slide for c in cells] == ["skip", "slide", "-"]


def test_agenda_adds_up_to_90_minutes_and_quotes_the_measured_compute():
    rows = ws.agenda()
    assert sum(r["minutes"] for r in rows) == 90
    assert [r["start"] for r in rows] == [sum(r["minutes"] for r in rows[:i]) for i in range(len(rows))]
    blocks = {r["block"]: r for r in rows}
    waiting = [int(re.fullmatch(r"(\d+) s", blocks[b]["waiting"]).group(1)) for b in [*ws.SECTIONS, "lab"]]
    assert sum(waiting) <= BUDGET_S
    assert blocks["lab"]["minutes"] <= 15


@pytest.mark.slow
def test_the_path_runs_end_to_end_within_budget_and_its_slides_build(tmp_path):
    """One run of the chained path (what `make slides` does). Its cells are sections the chapters' own tests also
    run; this proves they still run when chained, in one kernel, as attendees run them."""
    cells, problems = ws.path_cells()
    assert not problems
    nb = ws.notebook(cells)
    seconds = ws.run(nb, build=tmp_path)
    print({k: round(v, 1) for k, v in seconds.items()})
    assert set(ws.SECTIONS) | {"lab"} <= set(seconds) and seconds["total"] <= BUDGET_S
    errors = [c.id for c in nb.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert not errors
    html = ws.slides(nb, build=tmp_path).read_text()
    types = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    # nbconvert wraps each slide in a <section> that holds its sub-slides' <section>s, the first one included
    assert html.count("<section") == 2 * types.count("slide") + types.count("subslide") > 30
    plots = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert plots >= 8 and html.count('src="data:image/png;base64') == plots


def test_ready_says_ready_in_one_line():
    out = subprocess.run([sys.executable, "-m", "course_utils", "ready"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("READY") and out.stdout.count("\n") == 1, out.stdout
    assert out.stderr == ""


def test_not_ready_names_the_first_fix_in_one_line(monkeypatch, capsys):
    from course_utils import doctor

    monkeypatch.setattr(doctor, "collect", lambda: ([], ["torch is not installed: run `make setup`.", "two"]))
    assert doctor.ready() is False
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith("NOT READY: torch is not installed: run `make setup`.")
    assert "(and 1 more: `make doctor` lists them)" in line


def _no_network() -> list[str]:
    """A network namespace with no interface but loopback, where the machine allows one."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "-n"] if ok else []


def test_an_install_from_the_wheelhouse_needs_no_network(tmp_path, monkeypatch):
    """A small wheelhouse (one pinned package, the course's wheel and the course) installs with the network gone
    and pip's own configuration ignored. COURSE_TEST_WHEELHOUSE=1: the whole wheelhouse, `make setup` in the unpacked
    course, and the doctor (minutes, GBs)."""
    full = os.environ.get("COURSE_TEST_WHEELHOUSE") == "1"
    wh = tmp_path / "wheelhouse"
    with monkeypatch.context() as online:  # building the wheelhouse is the step that has a network, by design
        online.delenv("COURSE_BLOCK_NETWORK", raising=False)
        _module("build_wheelhouse").build(wh, None if full else ["tqdm"])
    names = {p.name.split("-")[0].lower() for p in wh.glob("*.whl")}
    assert {"tqdm", "course_utils", "setuptools"} <= names and (wh / "lora-course.tar.gz").exists()
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    env.pop("PIP_FIND_LINKS", None)
    subprocess.run(["tar", "xzf", str(wh / "lora-course.tar.gz"), "-C", str(tmp_path)], check=True)
    course = tmp_path / "lora-course"
    dry = subprocess.run(["make", "-n", "-W", "requirements.txt", "setup", f"WHEELHOUSE={wh}"], cwd=course,
                         capture_output=True, text=True, env=env, timeout=60).stdout
    assert f"--no-index --find-links {wh} -r requirements.txt" in dry, dry
    if full:
        out = subprocess.run([*_no_network(), "make", "setup", f"WHEELHOUSE={wh}"], cwd=course, capture_output=True,
                             text=True, env=env, timeout=1800)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        doctor = subprocess.run([str(course / ".venv" / "bin" / "python"), "-m", "course_utils", "doctor"],
                                cwd=course, capture_output=True, text=True, timeout=300)
        assert doctor.returncode == 0 and "All checks passed" in doctor.stdout, doctor.stdout + doctor.stderr
        return
    target = tmp_path / "site"  # a bare folder instead of a new venv: the same resolution from the wheelhouse, faster
    out = subprocess.run([*_no_network(), sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "--no-index", "--find-links", str(wh), "--target", str(target), "tqdm==4.70.1",
                          "course_utils"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    installed = {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
    assert {"tqdm", "course_utils"} <= installed and (target / "course_utils" / "assets").is_dir()
