"""Where a course's files are (nbgrader_config.py, re-rooted), and the environment nbgrader itself needs."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..paths import REPO_ROOT, set_cache_env
from .labs import Lab, lab_spec
from .sandbox import Limits


class GradingBroken(RuntimeError):
    """The grading itself cannot run (not a student's fault)."""


def prepare_environment(root=REPO_ROOT) -> dict:
    """Make nbgrader work from any shell: caches in the repo, the venv's bin/ on PATH (nbgrader runs `alembic` as
    a subprocess), the repo on PYTHONPATH (`nbgrader generate_assignment` imports this config's preprocessors).
    Student kernels do not inherit any of this: the sandbox gives them an environment of their own."""
    set_cache_env()
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    py_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in py_path:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *py_path])
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return dict(os.environ)


@dataclass
class Course:
    """Where things are; `root` is the repo for real grading and a temporary folder in tests."""

    root: Path
    config: object
    source: Path
    release: Path
    submitted: Path
    autograded: Path
    feedback: Path
    reports: Path
    limits: Limits = Limits()

    @property
    def db_url(self) -> str:
        return self.config.CourseDirectory.db_url

    def api(self):
        from nbgrader.apps import NbGraderAPI

        api = NbGraderAPI(config=self.config)
        api.log.setLevel("ERROR")
        return api

    def gradebook(self):
        from nbgrader.api import Gradebook

        return Gradebook(self.db_url, self.config.CourseDirectory.course_id)

    def limits_for(self, lab) -> Limits:
        spec: Lab = lab_spec(lab)
        return self.limits.with_overrides(cell_timeout=spec.cell_timeout, notebook_timeout=spec.notebook_timeout)

    def paths(self, lab: str, student: str | None = None) -> dict[str, Path]:
        name = f"{lab}.ipynb"
        out = {"source": self.source / lab / name, "release": self.release / lab / name}
        if student is not None:
            out.update(submitted=self.submitted / student / lab / name, autograded=self.autograded / student / lab / name,
                       log=self.reports / "logs" / lab / f"{student}.log")
        return out


def load_course(root=REPO_ROOT, timeout: float | None = None, config_file=REPO_ROOT / "nbgrader_config.py",
                notebook_timeout: float | None = None) -> Course:
    """Read nbgrader_config.py, re-rooted at `root` (its folder names are relative, the db goes under root)."""
    from traitlets.config.loader import PyFileConfigLoader

    prepare_environment()
    root = Path(root).resolve()
    config_file = Path(config_file)
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: it maps nbgrader onto solutions/ and labs/. "
                                "Fix: restore it with `git checkout -- nbgrader_config.py`.")
    cfg = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    cd = cfg.CourseDirectory
    cd.root = str(root)
    (root / "nbgrader").mkdir(parents=True, exist_ok=True)
    cd.db_url = "sqlite:///" + str(root / "nbgrader" / "gradebook.db")
    cfg.RestoreDeletedCells.release_directory = cd.release_directory
    cfg.SanitizeFeedback.source_directory = str(root / cd.source_directory)
    if timeout is not None:
        cfg.Execute.timeout = int(timeout)
    grader = cfg.CourseGrader
    limits = Limits().with_overrides(
        cell_timeout=cfg.Execute.timeout if "timeout" in cfg.Execute else None,
        notebook_timeout=notebook_timeout or grader.get("notebook_timeout"),
        memory=int(grader["memory_gib"] * (1 << 30)) if "memory_gib" in grader else None,
        output=int(grader["output_kib"] * 1024) if "output_kib" in grader else None)
    return Course(root=root, config=cfg, source=root / cd.source_directory, release=root / cd.release_directory,
                  submitted=root / cd.submitted_directory, autograded=root / cd.autograded_directory,
                  feedback=root / cd.feedback_directory, reports=root / "nbgrader" / "reports", limits=limits)
