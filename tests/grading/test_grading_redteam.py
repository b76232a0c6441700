"""The red team (issue 13): every class of attack as a submission in the graded batch (hostile.py), graded next to
honest students. Each attack must fail: it scores no more than its honest parts, gets the stated status and
reason, and leaves the course tree, the environment, the gradebook and every other student untouched."""
from __future__ import annotations

import json

import nbformat
import pytest
from conftest import processes_with
from hostile import ATTACKS, MARKER

import redteam_lab

RT = redteam_lab.NAME
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.student for a in ATTACKS])
def test_attack_fails(batch, attack):
    r = batch.result(attack.lab, attack.student)
    assert (r.status, r.score) == (attack.status, attack.score), f"{attack.klass}: {r}"
    assert attack.reason in r.reason, f"{attack.klass}: {r.reason}"
    if attack.outputs:
        text = _outputs(batch, attack.lab, attack.student)
        for fragment in attack.outputs:
            assert fragment in text, f"{attack.klass}: the notebook should show {fragment!r}: {text[-2000:]}"
        assert "ALLOWED" not in text and "WROTE" not in text and "DB DONE" not in text and "DELETED" not in text
        assert "\nREAD " not in "\n" + text, "a secret file was readable"


def _outputs(batch, lab, student) -> str:
    nb = nbformat.read(str(batch.course.autograded / student / lab / f"{lab}.ipynb"), as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_honest_students_next_to_the_attacks_keep_full_marks(batch):
    for lab, student in [(RT, "t01_full"), (RT, "zz_full")] + [(lab, "s01_full") for lab in
                                                                ("lab01_memory_wall", "lab02_lora_from_scratch",
                                                                 "lab03_nf4", "lab04_qlora",
                                                                 "lab05_failure_diagnosis")]:
        r = batch.result(lab, student)
        assert (r.status, r.score) == ("graded", r.max_score), r


def test_blank_submissions_score_zero(batch):
    assert batch.result(RT, "t02_blank").score == 0
    assert batch.result(RT, "r10_skip_tags").score == 0


def test_course_tree_and_environment_are_unchanged(batch):
    """git status --ignored (every file, ignored ones included) and every file's size and mtime under the repo,
    its virtual environment and ~/.ipython: no planted .pth, .pyc, startup file or config line, nothing deleted."""
    assert batch.after["git"] == batch.before["git"]
    before, after = batch.before["tree"], batch.after["tree"]
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"grading changed files: {changed[:10]}"
    assert batch.after["course"] == batch.before["course"], "the test course's solutions/ or labs/ changed"


def test_submissions_of_other_students_are_unchanged(batch):
    assert batch.after["submitted"] == batch.before["submitted"]


def test_gradebook_holds_only_what_the_grader_wrote(batch):
    before, after = batch.before["gradebook"], batch.after["gradebook"]
    assert after["sources"] == before["sources"], "the stored tests changed"
    assert all(manual is None and bonus is None for _, _, manual, bonus in after["grades"]), \
        "a manual score or extra credit appeared"


def test_nothing_a_kernel_started_outlives_it(batch):
    assert processes_with(MARKER) == []


def test_nothing_written_by_a_kernel_reaches_the_grader_folders(batch):
    for kind in ("autograded",):
        folder = batch.course.root / "nbgrader" / kind / "r02_file_next" / RT
        assert sorted(p.name for p in folder.iterdir()) == [f"{RT}.ipynb"]


def test_outputs_are_capped_by_bytes(batch):
    nb_path = batch.course.autograded / "r28_flood" / RT / f"{RT}.ipynb"
    assert nb_path.stat().st_size < 2 << 20, "the 120 MiB line and 10 MB of short lines were not capped"
    text = _outputs(batch, RT, "r28_flood")
    assert "byte limit dropped" in text


def test_no_html_or_script_output_is_kept(batch):
    nb = json.loads((batch.course.autograded / "r05_script" / RT / f"{RT}.ipynb").read_text())
    kinds = {k for c in nb["cells"] for o in c.get("outputs", []) for k in o.get("data", {})}
    assert kinds <= {"text/plain", "image/png", "image/jpeg"}, kinds


def test_flagged_submissions_are_flagged_in_the_gradebook(batch):
    with batch.course.gradebook() as gb:
        flagged = {nb.student.id for a in gb.assignments for s in a.submissions for nb in s.notebooks if nb.flagged}
    expected = {a.student for a in ATTACKS if a.status == "flagged"}
    assert flagged == expected


def test_the_sleepy_notebook_is_cut_by_the_notebook_limit(batch):
    r = batch.result(RT, "r27_sleepy")
    assert r.seconds < redteam_lab.SPEC.notebook_timeout + 15, f"{r.seconds:.0f}s: the notebook limit did not cut it"
