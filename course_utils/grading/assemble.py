"""Build the notebook that is actually run for a submission: the lab's cells, with only the student's answers.

The released notebook is the skeleton. Every cell the course provides comes from it (text, setup, provided code),
every test cell from the source notebook (hidden tests included), and from the submission only the answer cells
(matched by grade id, the last copy if duplicated, the stub if deleted) and code cells the student added (kept
in place after the cell they followed). Tags and all metadata except the course's own nbgrader entry are dropped,
so `skip-execution`, `raises-exception` or an edited `nbgrader` entry change nothing. Every student cell is
screened (screen.py) first: answers that use the reference or tamper become the stub; added cells that do are
dropped. Everything that was changed is noted for the report.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .labs import HIDDEN_BEGIN, HIDDEN_END, Lab
from .screen import assigned_names, imports_of, screen

def grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def without_hidden(source: str) -> str:
    keep, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            keep.append(line)
    return "\n".join(keep)


def role_of(cell, first_code: bool) -> str:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if cell.cell_type != "code":
        return "markdown"
    if meta.get("solution"):
        return "answer"
    if meta.get("grade"):
        return "test"
    return "setup" if first_code else "provided"


def roles(nb) -> list[str]:
    out, seen_code = [], False
    for cell in nb.cells:
        out.append(role_of(cell, not seen_code and cell.cell_type == "code"))
        seen_code |= cell.cell_type == "code"
    return out


@dataclass
class Verdict:
    status: str            # ok | missing | invalid
    reason: str = ""
    notes: list = field(default_factory=list)


def validate_submission(course, lab: str, nb_path: Path) -> Verdict:
    """Can it be read as a notebook at all? (What is in it is assemble()'s business.)"""
    rel = nb_path.relative_to(course.root) if nb_path.is_relative_to(course.root) else nb_path
    if not nb_path.exists():
        others = sorted(p.name for p in nb_path.parent.glob("*.ipynb")) if nb_path.parent.is_dir() else []
        hint = f" (found {', '.join(others)}: was it renamed?)" if others else ""
        return Verdict("missing", f"no notebook at {rel}{hint}")
    if nb_path.stat().st_size > 64 << 20:
        return Verdict("invalid", f"{rel} is over 64 MiB: not a lab notebook")
    try:
        raw = json.loads(nb_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        return Verdict("invalid", f"{rel} is not UTF-8 text ({e.reason})")
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" (line {e.lineno}, column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        return Verdict("invalid", f"{rel} is not valid JSON{where}")
    try:
        if not isinstance(raw, dict) or raw.get("nbformat") != 4:
            raise ValueError(f"nbformat {raw.get('nbformat') if isinstance(raw, dict) else None!r}, expected 4")
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - nbformat raises several types; the message is what the student needs
        return Verdict("invalid", f"{rel} is JSON but not a valid notebook ({str(e).splitlines()[0][:120]})")
    return Verdict("ok")


@dataclass
class Assembly:
    nb: object                       # the notebook to run (nbformat 4)
    roles: list[str]
    notes: list[str] = field(default_factory=list)       # for the report
    flags: list[str] = field(default_factory=list)       # tampering found before running
    not_answered: dict = field(default_factory=dict)     # answer grade id -> why it was replaced by the stub
    graded_names: dict = field(default_factory=dict)     # answer grade id -> names its solution defines
    protected: list = field(default_factory=list)        # names our cells import: the probe watches them


def _clean(cell, nbgrader_meta=None, source=None):
    new = (nbformat.v4.new_markdown_cell if cell.cell_type == "markdown" else nbformat.v4.new_code_cell)(
        cell.source if source is None else source)
    if nbgrader_meta:
        new.metadata["nbgrader"] = copy.deepcopy(nbgrader_meta)
    return new


def _defined_names(source: str) -> list[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def assemble(release, source, student, lab: Lab) -> Assembly:
    """release/source/student: nbformat notebooks of the lab's release, its source and the submission."""
    rel_roles = roles(release)
    tests_src = {grade_id(c): c for c in source.cells if grade_id(c)}
    answers = {grade_id(c): c for c, r in zip(release.cells, rel_roles) if r == "answer"}
    by_id = {c.get("id"): i for i, c in enumerate(release.cells) if c.get("id")}
    by_source = {}
    for i, (c, r) in enumerate(zip(release.cells, rel_roles)):
        if r in ("setup", "provided", "markdown"):
            by_source.setdefault((c.cell_type, c.source.strip()), i)
    ours = [tests_src.get(grade_id(c), c).source for c, r in zip(release.cells, rel_roles) if r in
            ("setup", "provided", "test")]
    provided_imports = imports_of(ours)
    provided_names = assigned_names(c.source for c, r in zip(release.cells, rel_roles) if r in ("setup", "provided"))

    # walk the submission: answers by grade id (last copy wins), everything else anchored to what it follows
    setup = rel_roles.index("setup") if "setup" in rel_roles else 0
    student_answer, added, anchor = {}, {}, -1
    edited_tests, edited_provided, duplicated, dropped_duplicates = [], [], [], []
    seen_ids = []
    for cell in student.cells:
        gid = grade_id(cell)
        if gid in answers:
            if gid in student_answer:
                duplicated.append(gid)
                added.setdefault(max(anchor, setup), []).append(student_answer[gid][1])  # earlier copy: runs, ungraded
            seen_ids.append(gid)
            student_answer[gid] = (cell.source, cell)
            anchor = next(i for i, c in enumerate(release.cells) if grade_id(c) == gid)
            continue
        if gid in tests_src:
            if gid in seen_ids:
                duplicated.append(gid)
            seen_ids.append(gid)
            rel_cell = release.cells[next(i for i, c in enumerate(release.cells) if grade_id(c) == gid)]
            if without_hidden(cell.source).strip() != without_hidden(rel_cell.source).strip():
                edited_tests.append(gid)
            anchor = next(i for i, c in enumerate(release.cells) if grade_id(c) == gid)
            continue
        i = by_id.get(cell.get("id"))
        if i is not None and rel_roles[i] in ("setup", "provided", "markdown") and \
                release.cells[i].cell_type == cell.cell_type:
            if cell.source.strip() != release.cells[i].source.strip() and cell.cell_type == "code":
                edited_provided.append(i)
            anchor = i
            continue
        i = by_source.get((cell.cell_type, cell.source.strip()))
        if i is not None:
            anchor = i
            continue
        if cell.cell_type == "code" and cell.source.strip():
            added.setdefault(max(anchor, setup), []).append(cell)  # nothing of theirs runs before our setup

    asm = Assembly(nbformat.v4.new_notebook(), [], protected=sorted(provided_imports))
    asm.nb.metadata = copy.deepcopy(release.metadata)
    code_no = {i: n for n, i in enumerate(i for i, c in enumerate(release.cells) if c.cell_type == "code")}

    def emit(cell, role):
        asm.nb.cells.append(cell)
        asm.roles.append(role)

    def emit_added(i):
        for cell in added.get(i, []):
            found = screen(cell.source, lab, provided_imports, provided_names, shadow_check=True)
            if found:
                asm.notes.append(f"a cell you added was not run: it {found[0].message}")
                if any(f.kind == "tamper" for f in found):
                    asm.flags.append(f"added cell: {found[0].message}")
                continue
            emit(_clean(cell), "added")

    for i, (cell, role) in enumerate(zip(release.cells, rel_roles)):
        if role == "answer":
            gid = grade_id(cell)
            src = student_answer.get(gid, (cell.source, None))[0]
            found = screen(src, lab, provided_imports, provided_names) if gid in student_answer else []
            tamper = [f for f in found if f.kind == "tamper"]
            if found:
                asm.not_answered[gid] = found[0].message
                asm.notes.append(f"{gid} scored as not answered: it {found[0].message}")
                asm.flags += [f"{gid}: {f.message}" for f in tamper]
                src = cell.source
            asm.graded_names[gid] = _defined_names(source_answer(source, gid) or "")
            emit(_clean(cell, cell.metadata.nbgrader, src), "answer")
        elif role == "test":
            gid = grade_id(cell)
            emit(_clean(cell, cell.metadata.nbgrader, tests_src.get(gid, cell).source), "test")
        else:
            emit(_clean(cell), role)
        emit_added(i)

    for k, c in enumerate(asm.nb.cells):
        c["id"] = f"cell-{k:03d}"
    deleted = [g for g in answers if g not in student_answer] + \
              [g for g in tests_src if g not in seen_ids and g not in answers]
    if deleted:
        asm.notes.insert(0, f"deleted cells restored from the release: {', '.join(deleted)}")
    if duplicated:
        asm.notes.append(f"duplicated cells (extra copies ungraded): {', '.join(sorted(set(duplicated)))}")
    if edited_tests:
        asm.notes.append(f"edited test cells restored: {', '.join(sorted(set(edited_tests)))}")
    if edited_provided:
        asm.notes.append("edited provided cells restored: code cell " +
                         ", ".join(str(code_no.get(i, i) + 1) for i in edited_provided))
    return asm


def source_answer(source, gid: str) -> str | None:
    return next((c.source for c in source.cells if grade_id(c) == gid), None)
