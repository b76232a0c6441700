"""The README's lab commands really serve JupyterLab on the course, in student and in instructor mode (as root too).

tests/test_browser.py clicks through the student mode in a real browser; these tests ask the server directly, so
they also run where there is no Chromium.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest

from browser.jupyterlab import LabServer
from course_utils import lab_modes
from course_utils.paths import REPO_ROOT

NBGRADER_INSTRUCTOR = set(lab_modes.INSTRUCTOR_LAB_PLUGINS)


def status(server: LabServer, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{server.base}/{path}?token={server.token}", timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def page_config(server: LabServer) -> dict:
    with urllib.request.urlopen(f"{server.base}/lab?token={server.token}", timeout=30) as r:
        html = r.read().decode()
    return json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html,
                                re.S).group(1))


def root_names(server: LabServer) -> set[str]:
    return {item["name"] for item in server.api("api/contents")["content"]}


def fetch_news(server: LabServer) -> str:
    schema = server.api("lab/api/settings/@jupyterlab/apputils-extension:notification")["schema"]
    return schema["properties"]["fetchNews"]["default"]


@pytest.mark.slow
def test_student_mode(tmp_path):
    with LabServer(tmp_path, "lab") as server:
        assert server.printed_url().split("?")[0].endswith("/lab/tree/notebooks/00_setup.ipynb"), server.output()
        names = root_names(server)
        assert {"notebooks", "labs", "course_utils", "README.md"} <= names
        assert not names & {"solutions", "tests", "scripts", "nbgrader_config.py"}, names
        assert "00_setup.ipynb" in {i["name"] for i in server.api("api/contents/notebooks")["content"]}
        assert NBGRADER_INSTRUCTOR <= set(page_config(server)["disabledExtensions"])
        assert fetch_news(server) == "false"
        # open a chapter and start a kernel, as the first click does: the terminal stays free of warnings
        server.api("api/contents/notebooks/00_setup.ipynb")
        server.wait_for_kernel(server.post("api/kernels", {"name": "python3"})["id"])
        warnings = [line for line in server.output().splitlines() if "[W " in line or "WARNING" in line]
        assert not warnings, "\n".join(warnings)
        assert status(server, "formgrader") == 404, "the Formgrader must not be served in student mode"


@pytest.mark.slow
def test_instructor_mode(tmp_path):
    with LabServer(tmp_path, "instructor") as server:
        assert {"solutions", "tests", "notebooks", "labs", "nbgrader_config.py"} <= root_names(server)
        assert not NBGRADER_INSTRUCTOR & set(page_config(server)["disabledExtensions"])
        assert status(server, "formgrader") == 200, server.output()
        assert fetch_news(server) == "false"


def test_modes_hide_what_they_say():
    student, instructor = lab_modes.server_config("student"), lab_modes.server_config("instructor")
    hidden = student["ContentsManager"]["hide_globs"]
    assert {"solutions", "tests", "__pycache__"} <= set(hidden)
    assert "ContentsManager" not in instructor
    assert student["LabApp"]["default_url"] == "/lab/tree/notebooks/00_setup.ipynb"
    assert (REPO_ROOT / lab_modes.STUDENT_LANDING).exists()
    assert not any(student["ServerApp"]["jpserver_extensions"].values())
    assert all(instructor["ServerApp"]["jpserver_extensions"].values())
    with pytest.raises(ValueError, match="Fix: use one of student, instructor"):
        lab_modes.server_config("teacher")


def test_lab_command_allows_root():
    """JupyterLab refuses root without --allow-root; our command adds it exactly when needed."""
    src = (REPO_ROOT / "course_utils" / "__main__.py").read_text()
    assert "--allow-root" in src and "geteuid() == 0" in src
    assert os.environ["JUPYTER_CONFIG_DIR"].startswith(str(REPO_ROOT))


def test_binder_files():
    """repo2docker builds from environment.yml, then runs postBuild; `start` wraps the server in student mode."""
    post, start = REPO_ROOT / "postBuild", REPO_ROOT / "start"
    assert os.access(post, os.X_OK) and os.access(start, os.X_OK)
    assert "--no-deps" in post.read_text() and "course_utils doctor" in post.read_text()
    assert 'launch_env("student")' in start.read_text() and 'exec "$@"' in start.read_text()
    assert not (REPO_ROOT / "binder").exists(), "a binder/ folder would make repo2docker ignore environment.yml"
