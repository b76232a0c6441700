"""nbgrader preprocessors this course plugs into nbgrader (see nbgrader_config.py).

- RefuseUnsandboxedAutograde: plain `nbgrader autograde` (or Formgrader's autograde button) would run student code
  with the instructor's rights; here it stops with the command that grades in the sandbox.
- SanitizeFeedback: what a student's feedback may show (see its docstring).
- RestoreDeletedCells, DeduplicateCells, HideHiddenTests: nbgrader-side fixes for notebooks graded by nbgrader
  itself (kept for anyone running nbgrader's own pipeline on trusted notebooks).
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import GetGrades, NbGraderPreprocessor
from traitlets import Unicode

from .assemble import grade_id, role_of, without_hidden
from .labs import HIDDEN_BEGIN, HIDDEN_END

NO_OUTPUTS_NOTE = ("*Feedback shows each test's result, and for a failed test its message. Your own outputs are "
                   "not included: run your notebook to see them.*")


class RefuseUnsandboxedAutograde(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        raise RuntimeError("this course grades student notebooks only inside a sandbox: plain `nbgrader autograde` "
                           "would run them with your rights. Fix: run `python -m course_utils.grading autograde` "
                           "(or `make grade`).")


class SanitizeFeedback(NbGraderPreprocessor):
    """Feedback = the student's code, each test's points and, for a failed test, a one-line message.

    Hidden tests are cut from the test cells; no output of any cell is shown (a student's code may print whatever
    it found, and output HTML would run in the student's browser); a failed test's message is kept to 3 lines of
    400 characters, with any line that quotes a hidden test removed.
    """

    source_directory = Unicode("solutions", help="Source notebooks (absolute, or relative to the course root)."
                               ).tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        path = Path(self.source_directory) / info["assignment"] / f"{info['notebook']}.ipynb"
        hidden = hidden_lines(nbformat.read(str(path), as_version=4)) if path.exists() else set()
        cells, first_code = [], True
        for cell in nb.cells:
            role = role_of(cell, first_code and cell.cell_type == "code")
            first_code &= cell.cell_type != "code"
            cell.pop("attachments", None)
            cell.metadata = {k: v for k, v in cell.metadata.items() if k == "nbgrader"}
            if cell.cell_type == "code":
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                cell.outputs = []
                if role == "test":
                    cell.source = without_hidden(cell.source).rstrip() + "\n# (hidden tests ran here)"
                    if errors:
                        cell.outputs = [_message(errors[-1], hidden)]
            elif cell.cell_type != "markdown":
                continue
            cells.append(cell)
        nb.cells = [nbformat.v4.new_markdown_cell(NO_OUTPUTS_NOTE), *cells]
        nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
        return nb, resources


def hidden_lines(source_nb) -> set[str]:
    """Lines of hidden tests long enough to identify, that the student's own notebook does not show anyway."""
    hidden, public = set(), set()
    for cell in source_nb.cells:
        inside = False
        for line in cell.source.split("\n"):
            s = line.strip()
            if HIDDEN_BEGIN in line or HIDDEN_END in line:
                inside = HIDDEN_BEGIN in line
            elif inside:
                hidden.add(s)
            else:
                public.add(s)
    return {s for s in hidden - public if len(s) >= 8}


def _message(error: dict, hidden: set[str]):
    lines = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".split("\n")
    keep = [ln[:400] for ln in lines if not any(h in ln for h in hidden)][:3] or ["(message hidden)"]
    return nbformat.v4.new_output("error", ename=str(error.get("ename", "Error"))[:100],
                                  evalue="\n".join(keep), traceback=["\n".join(keep)])


class RestoreDeletedCells(NbGraderPreprocessor):
    """Put back nbgrader cells (answers and tests) that a student deleted, taken from the released notebook."""

    release_directory = Unicode("labs", help="Released notebooks, relative to the course root.").tag(config=True)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        path = Path(self.release_directory) / info["assignment"] / f"{info['notebook']}.ipynb"
        if not path.exists():
            self.log.warning("RestoreDeletedCells: no released notebook at %s", path)
            return nb, resources
        released = nbformat.read(str(path), as_version=4)
        present = {grade_id(c) for c in nb.cells} - {None}
        previous_idx = -1
        for cell in released.cells:
            gid = grade_id(cell)
            if gid is None:
                continue
            if gid in present:
                previous_idx = next(i for i, c in enumerate(nb.cells) if grade_id(c) == gid)
                continue
            new = copy.deepcopy(cell)
            new.pop("id", None)
            nb.cells.insert(previous_idx + 1, new)
            previous_idx += 1
        for i, cell in enumerate(nb.cells):  # nbformat >= 4.5 needs an id on every cell
            if nb.nbformat_minor >= 5 and "id" not in cell:
                cell["id"] = f"restored-{i}"
        return nb, resources


class DeduplicateCells(NbGraderPreprocessor):
    """Keep the last copy of a duplicated grade id graded; earlier copies become plain cells."""

    def preprocess(self, nb, resources):
        seen = set()
        for cell in reversed(nb.cells):
            gid = grade_id(cell)
            if gid is None:
                if "nbgrader" in cell.get("metadata", {}) and not cell.metadata.nbgrader.get("grade_id"):
                    del cell.metadata["nbgrader"]
                continue
            if gid in seen:
                del cell.metadata["nbgrader"]
                for key in ("deletable", "editable"):
                    cell.metadata.pop(key, None)
            seen.add(gid)
        return nb, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Test cells without their hidden part; failing asserts without the source lines a traceback quotes."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            return cell, resources
        cell.source = without_hidden(cell.source).rstrip() + "\n# (hidden tests ran here)"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources


SANITIZE_PREPROCESSORS = [RefuseUnsandboxedAutograde]   # c.Autograde.sanitize_preprocessors
FEEDBACK_PREPROCESSORS = [GetGrades, SanitizeFeedback, CSSHTMLHeaderPreprocessor]
