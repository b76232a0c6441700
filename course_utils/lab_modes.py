"""Student and instructor modes of JupyterLab: what each one shows, as Jupyter config the lab commands load.

    python -m course_utils lab          (make lab)         student: lands on notebooks/00_setup.ipynb, hides the
                                                           instructor folders, nbgrader's instructor tools off
    python -m course_utils instructor   (make instructor)  everything visible, Formgrader and Create Assignment on

Each mode is a Jupyter config directory, .jupyter/modes/<mode>/, written from the tables below on every launch (so
it cannot drift from this file) and put on JUPYTER_CONFIG_PATH of the server alone. Hiding is a tidy file browser,
not access control: a student who cloned the repo has every file. A class that needs the solutions out of reach
uses nbgrader's exchange on JupyterHub (docs/classroom.md), where students only ever receive the released labs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .runtime.paths import REPO_ROOT

MODES = ("student", "instructor")
STUDENT_LANDING = "notebooks/00_setup.ipynb"

# Names (file-browser globs, matched against each file's own name) a student does not need to see: reference
# solutions, hidden tests, the gradebook and submissions, the scripts that build labs from their solutions.
INSTRUCTOR_ONLY = ("solutions", "tests", "nbgrader", "scripts", "nbgrader_config.py", "gradebook.db",
                   "instructor_guide.md", "classroom.md")

# nbgrader's instructor side: the Formgrader (grading UI + its server API), Create Assignment (the cell-metadata
# sidebar) and the course list. The student side (Assignments list, Validate button) stays on in both modes.
INSTRUCTOR_LAB_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                          "@jupyter/nbgrader:course-list")
INSTRUCTOR_SERVER_EXTENSIONS = ("nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list")

# Both modes: no "get notified about official Jupyter news?" pop-up and no update check (the course is offline).
SETTING_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


def mode_dir(mode: str) -> Path:
    return REPO_ROOT / ".jupyter" / "modes" / mode


def server_config(mode: str) -> dict:
    """The jupyter_server_config.json of a mode."""
    from jupyter_server.services.contents.manager import ContentsManager

    _check(mode)
    student = mode == "student"
    config = {
        "ServerApp": {
            "root_dir": str(REPO_ROOT),
            "jpserver_extensions": {name: not student for name in INSTRUCTOR_SERVER_EXTENSIONS},
        },
        # ipykernel warns "running over TCP without encryption" unless the server gives each kernel CurveZMQ keys
        "KernelManager": {"transport_encryption": "auto"},
    }
    if student:
        config["LabApp"] = {"default_url": f"/lab/tree/{STUDENT_LANDING}"}
        config["ContentsManager"] = {"hide_globs": [*ContentsManager.hide_globs.default(), *INSTRUCTOR_ONLY],
                                     "preferred_dir": "notebooks"}
    return config


def page_config(mode: str) -> dict:
    """labconfig/page_config.json: the JupyterLab plugins a mode switches off."""
    _check(mode)
    return {"disabledExtensions": {name: True for name in INSTRUCTOR_LAB_PLUGINS} if mode == "student" else {}}


def write_config(mode: str) -> Path:
    """Write the mode's config directory; returns it (the lab command puts it on JUPYTER_CONFIG_PATH)."""
    root = mode_dir(mode)
    files = {root / "jupyter_server_config.json": server_config(mode),
             root / "labconfig" / "page_config.json": page_config(mode),
             root / "labconfig" / "default_setting_overrides.json": SETTING_OVERRIDES}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    return root


def trust_course_notebooks() -> int:
    """Sign the course's own notebooks, as `jupyter trust` does, so opening one does not log "is not trusted".

    Their outputs (plots, tables) were made by the course, not fetched from anywhere; a notebook the student saves
    is signed by JupyterLab itself. Returns how many were signed.
    """
    import nbformat
    from nbformat.sign import NotebookNotary

    notary = NotebookNotary()
    n = 0
    for folder in ("notebooks", "labs", "solutions"):
        for path in sorted((REPO_ROOT / folder).rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            nb = nbformat.read(path, as_version=4)
            if not notary.check_signature(nb):
                notary.sign(nb)
                n += 1
    return n


def launch_env(mode: str, environ=None) -> dict:
    """The environment JupyterLab runs in for a mode: the mode's config directory first on JUPYTER_CONFIG_PATH."""
    env = dict(os.environ if environ is None else environ)
    ours = {str(mode_dir(m)) for m in MODES}
    extra = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p not in ours]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(write_config(mode)), *extra])
    # the kernels' debugger (debugpy) otherwise prints a note about frozen modules to every new kernel's stderr
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # the course model's matmuls are tiny: one thread is as fast, and two OpenMP threads on a busy 2-core laptop
    # stall (measured: chapter 04 in JupyterLab took 430 s with two threads, 59 s with one, on a busy 2-core machine)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _check(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}. Fix: use one of {', '.join(MODES)}.")
