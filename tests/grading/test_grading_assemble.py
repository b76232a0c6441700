"""course_utils.grading.assemble: the notebook that is run is the lab's own, with only the student's answers."""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from submissions import LAB1, gid, index

from course_utils.grading.assemble import assemble, validate_submission
from course_utils.grading.labs import lab_spec

ROOT = Path(__file__).resolve().parents[2]
RELEASE = nbformat.read(str(ROOT / "labs" / LAB1 / f"{LAB1}.ipynb"), as_version=4)
SOURCE = nbformat.read(str(ROOT / "solutions" / LAB1 / f"{LAB1}.ipynb"), as_version=4)
SPEC = lab_spec(LAB1)


def student():
    return copy.deepcopy(RELEASE)


def cell(asm, grade_id):
    return asm.nb.cells[index(asm.nb, grade_id)]


def test_structure_and_sources_come_from_the_lab():
    nb = student()
    nb.cells[index(nb, "bytes_per_param")].source = "def bytes_per_param(dtype):\n    return 4"
    asm = assemble(RELEASE, SOURCE, nb, SPEC)
    assert len(asm.nb.cells) == len(RELEASE.cells) and asm.notes == [] and asm.flags == []
    assert cell(asm, "bytes_per_param").source.endswith("return 4")
    assert "BEGIN HIDDEN TESTS" in cell(asm, "nf4_bits_tests").source, "tests come from the source, hidden part too"
    assert asm.roles[:2] == ["markdown", "setup"] and {"answer", "test", "provided"} <= set(asm.roles)
    assert asm.graded_names["bytes_per_param"] == ["bytes_per_param"]


def test_tags_and_metadata_are_the_labs_own():
    nb = student()
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}
    for c in nb.cells:
        c.metadata["tags"] = ["skip-execution", "raises-exception"]
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.metadata.nbgrader["points"] = 100
    asm = assemble(RELEASE, SOURCE, nb, SPEC)
    assert asm.nb.metadata == RELEASE.metadata
    assert all(set(c.metadata) <= {"nbgrader"} for c in asm.nb.cells)
    assert all(c.metadata.nbgrader.get("points", 0) <= 2 for c in asm.nb.cells if "nbgrader" in c.metadata)


def test_deleted_duplicated_and_edited_cells():
    nb = student()
    i = index(nb, "lora_param_count")
    del nb.cells[i:i + 2]
    j = index(nb, "adam_bytes_per_param")
    nb.cells.insert(j + 1, copy.deepcopy(nb.cells[j]))
    nb.cells[index(nb, "nf4_bits_tests")].source = "pass"
    k = next(i for i, c in enumerate(nb.cells) if c.source.startswith("print(f\"NF4, blocksize"))
    nb.cells[k].source = "print('I changed this')"
    asm = assemble(RELEASE, SOURCE, nb, SPEC)
    notes = "; ".join(asm.notes)
    assert "deleted cells restored from the release: lora_param_count, lora_param_count_tests" in notes
    assert "duplicated cells (extra copies ungraded): adam_bytes_per_param" in notes
    assert "edited test cells restored: nf4_bits_tests" in notes and "edited provided cells restored" in notes
    assert "raise NotImplementedError" in cell(asm, "lora_param_count").source, "a deleted answer is the stub"
    assert [gid(c) for c in asm.nb.cells].count("adam_bytes_per_param") == 1
    assert not any("I changed this" in c.source for c in asm.nb.cells)


def test_added_cells_run_where_the_student_put_them_but_never_before_the_setup():
    nb = student()
    nb.cells.insert(0, nbformat.v4.new_code_cell("helper_above_setup = 1"))
    nb.cells.insert(index(nb, "bytes_per_param_tests") + 1, nbformat.v4.new_code_cell("print('mine')"))
    asm = assemble(RELEASE, SOURCE, nb, SPEC)
    srcs = [c.source for c in asm.nb.cells]
    setup = asm.roles.index("setup")
    assert srcs.index("helper_above_setup = 1") == setup + 1
    assert srcs.index("print('mine')") == index(asm.nb, "bytes_per_param_tests") + 1
    assert asm.roles[srcs.index("print('mine')")] == "added"


def test_screened_answers_become_the_stub_with_a_reason():
    nb = student()
    nb.cells[index(nb, "full_finetune_bytes")].source = "from course_utils.memory import full_finetune_bytes"
    nb.cells[index(nb, "lora_bytes")].source = "get_ipython().events.register('pre_run_cell', print)"
    asm = assemble(RELEASE, SOURCE, nb, SPEC)
    assert "raise NotImplementedError" in cell(asm, "full_finetune_bytes").source
    assert "course_utils.memory.full_finetune_bytes" in asm.not_answered["full_finetune_bytes"]
    assert asm.flags and all(f.startswith("lora_bytes:") for f in asm.flags), "a reference import is not a flag"


@pytest.mark.parametrize("content, status, fragment", [
    (None, "missing", "no notebook"),
    ("{ nope", "invalid", "not valid JSON"),
    ('{"cells": []}', "invalid", "not a valid notebook"),
    (b"\xff\xfe", "invalid", "not UTF-8"),
])
def test_unreadable_submissions(tmp_path, content, status, fragment):
    class Course:
        root = tmp_path

    path = tmp_path / "nb.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    v = validate_submission(Course, LAB1, path)
    assert v.status == status and fragment in v.reason, v
