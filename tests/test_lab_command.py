"""The README's lab command really serves JupyterLab on the course (as root too, as in containers)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from course_utils.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lab_command_serves_the_course():
    port, token = free_port(), "course-test-token"
    cmd = [sys.executable, "-m", "course_utils", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listing, deadline = None, time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}"
                with urllib.request.urlopen(url, timeout=5) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, f"JupyterLab did not answer:\n{proc.stdout.read() if proc.poll() is not None else ''}"
        names = {item["name"] for item in listing["content"]}
        assert "00_setup.ipynb" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_lab_command_allows_root():
    """JupyterLab refuses root without --allow-root; our command adds it exactly when needed."""
    src = (REPO_ROOT / "course_utils" / "__main__.py").read_text()
    assert "--allow-root" in src and "geteuid() == 0" in src
    assert os.environ["JUPYTER_CONFIG_DIR"].startswith(str(REPO_ROOT))
