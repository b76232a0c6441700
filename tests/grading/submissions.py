"""Building student notebooks for the grading tests: honest, blank, partial and broken ones (hostile ones live in
hostile.py). Every builder starts from a lab's released notebook, as a student would."""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
LAB1, LAB2, LAB3, LAB4 = "lab01_memory_wall", "lab02_lora_from_scratch", "lab03_nf4", "lab04_qlora"
LAB5 = "lab05_failure_diagnosis"


def gid(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def index(nb, grade_id):
    return next(i for i, c in enumerate(nb.cells) if gid(c) == grade_id)


class Course:
    """Where the test course keeps a lab's source and release (the toy lab is not in the repo)."""

    def __init__(self, root: Path):
        self.root = root

    def release(self, lab):
        return nbformat.read(str(self.root / "labs" / lab / f"{lab}.ipynb"), as_version=4)

    def solution_answers(self, lab) -> dict:
        sol = nbformat.read(str(self.root / "solutions" / lab / f"{lab}.ipynb"), as_version=4)
        return {gid(c): "\n".join(ln for ln in c.source.split("\n") if "### BEGIN SOLUTION" not in ln
                                  and "### END SOLUTION" not in ln)
                for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution")}

    def student_copy(self, lab, filled=None):
        """The released notebook with the answers in `filled` (all if None) completed as the solution does."""
        nb = self.release(lab)
        answers = self.solution_answers(lab)
        for cell in nb.cells:
            g = gid(cell)
            if g in answers and (filled is None or g in filled):
                cell.source = answers[g]
        return nb

    def with_answer(self, lab, grade_id, source, filled=None):
        nb = self.student_copy(lab, filled)
        nb.cells[index(nb, grade_id)].source = source
        return nb


def add_cell(nb, after_grade_id, source):
    """A code cell the student added right after the cell with `after_grade_id` (None: after the setup cell)."""
    i = index(nb, after_grade_id) if after_grade_id else next(i for i, c in enumerate(nb.cells)
                                                                if c.cell_type == "code")
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.insert(i + 1, cell)
    return nb


PARTIAL = {LAB1: {"bytes_per_param", "nf4_bits_per_param", "optimizer_bytes_per_param"},
           LAB2: {"lora_parameter_count", "lora_layer"},
           LAB3: {"nf4_codebook", "normalize_blocks", "nearest_code"},
           LAB4: {"quantize_base", "add_adapters"},
           LAB5: {"diagnose_1", "fix_config_1", "diagnose_2"}}


def messy(course: Course):
    """Lab 01 with everything a careless student does at once: a raising answer, sys.exit(), a wrong answer whose
    test was replaced by `pass`, an answer and its test deleted, a test cell duplicated."""
    nb = course.with_answer(LAB1, "lora_bytes", "def lora_bytes(*args, **kwargs):\n    raise RuntimeError('oops')")
    nb.cells[index(nb, "full_ft_7b_gib")].source = "import sys\nsys.exit()"
    nb.cells[index(nb, "nf4_bits_per_param")].source = "def nf4_bits_per_param(blocksize=64, double_quant=True):\n    return 4.5"
    nb.cells[index(nb, "nf4_bits_tests")].source = "pass"
    i = index(nb, "lora_param_count")
    del nb.cells[i:i + 2]
    j = index(nb, "adam_bytes_per_param")
    dup = copy.deepcopy(nb.cells[j])
    dup.id = "student-duplicate"
    nb.cells.insert(j + 1, dup)
    return nb


def honest(course, lab):
    return lambda: course.student_copy(lab)


def real_lab_submissions(course: Course) -> dict:
    """student -> {lab: notebook builder | text | None (no notebook)}. Every lab of LAB_TABLE gets a full and a
    blank submission (a new lab joins the batch by its line in LAB_TABLE), and a partial one if PARTIAL names it."""
    from course_utils.grading import LABS

    return {
        "s01_full": {lab: honest(course, lab) for lab in LABS},
        "s02_blank": {lab: (lambda lab=lab: course.student_copy(lab, set())) for lab in LABS},
        "s03_partial": {lab: (lambda lab=lab: course.student_copy(lab, PARTIAL[lab])) for lab in PARTIAL},
        "s04_messy": {LAB1: lambda: messy(course)},
        "s05_dead": {LAB2: lambda: course.with_answer(LAB2, "inject_lora", "import os\nos._exit(1)")},
        "s06_broken": {LAB1: "{ this is not json", LAB2: None},
    }


def write(root: Path, student: str, lab: str, spec) -> None:
    folder = root / "nbgrader" / "submitted" / student / lab
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lab}.ipynb"
    if spec is None:
        (folder / "notes.txt").write_text("I forgot the notebook")
    elif isinstance(spec, str):
        path.write_text(spec)
    else:
        nbformat.write(spec(), str(path))
