"""course_utils.grading.feedback / preprocessors.SanitizeFeedback: what a student reads after grading: their code,
the points and a failed test's message; never a hidden test, a raw output, a script or a file they planted."""
from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest

import redteam_lab
from course_utils import grading as G
from course_utils.grading.preprocessors import hidden_lines

RT = redteam_lab.NAME
pytestmark = pytest.mark.slow


def text_of(page: Path) -> str:
    """Feedback HTML without tags (syntax highlighting splits code into spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_every_autograded_submission_gets_a_page(batch, feedback_pages):
    ok, pages = feedback_pages
    assert ok
    graded = {(p.name, p.parent.name) for p in batch.course.autograded.glob("*/*")}
    assert {(p.parent.name, p.parent.parent.name) for p in pages} == graded and len(graded) >= 40


def test_no_page_holds_a_script_or_raw_html_from_outputs(feedback_pages):
    for page in feedback_pages[1]:
        raw = page.read_text()
        assert not re.search(r"<\s*(script|iframe|object|embed|svg)\b", raw, re.I), page
        assert not re.search(r"<[^>]*\son\w+\s*=", raw, re.I), page  # an event handler inside a real tag
        assert 'href="javascript:' not in raw.lower(), page


def test_no_page_shows_a_hidden_test(batch, feedback_pages):
    for lab in (*G.LABS, RT):
        source = nbformat.read(str(batch.course.source / lab / f"{lab}.ipynb"), as_version=4)
        hidden = hidden_lines(source)
        assert hidden, f"{lab} should have hidden tests to protect"
        for page in [p for p in feedback_pages[1] if p.parent.name == lab]:
            text = text_of(page)
            assert "HIDDEN TESTS" not in text, page
            leaked = [h for h in hidden if h in text]
            assert not leaked, f"{page.relative_to(batch.course.root)} shows hidden test lines: {leaked[:3]}"


def test_a_failed_test_explains_itself(batch):
    page = batch.course.feedback / "s04_messy" / G.LABS[0] / f"{G.LABS[0]}.html"
    text = text_of(page)
    assert "QLoRA reports 4.127 bits" in text, "the message of the failing nf4 test"
    assert "(hidden tests ran here)" in text


def test_a_students_markup_is_shown_as_text(batch):
    text = text_of(batch.course.feedback / "r05_script" / RT / f"{RT}.html")
    assert "<script>alert(3)</script>" in text, "the failure message, escaped, still reads as the student wrote it"


def test_files_planted_next_to_the_notebook_never_reach_feedback(batch):
    folder = batch.course.feedback / "r02_file_next" / RT
    assert sorted(p.name for p in folder.iterdir()) == [f"{RT}.html"]
