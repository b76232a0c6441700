"""`python -m course_utils doctor`: a clear pass on a good install, a non-zero exit with the fix on a bad one."""
from __future__ import annotations

import shutil
import subprocess
import sys

from course_utils.paths import REPO_ROOT


def run_doctor(**env):
    import os

    return subprocess.run([sys.executable, "-m", "course_utils", "doctor"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, env={**os.environ, **env})


def test_doctor_passes_here():
    out = run_doctor()
    assert out.returncode == 0, out.stdout + out.stderr
    for word in ("torch", "bitsandbytes", "device", "offline", "course model checksum", "All checks passed"):
        assert word in out.stdout


def test_doctor_fails_clearly_on_a_corrupted_model(tmp_path, monkeypatch):
    from course_utils import doctor, manifest

    copy = tmp_path / "assets"
    shutil.copytree(REPO_ROOT / "course_utils" / "assets", copy)
    (copy / "course_model" / "config.json").write_text("{}")
    monkeypatch.setattr(manifest, "ASSETS_DIR", copy)
    monkeypatch.setattr(manifest.verify_manifest, "__defaults__", (copy, False))
    rows, problems = doctor.collect()
    assert any("config.json: checksum mismatch" in p and "git checkout" in p for p in problems)
