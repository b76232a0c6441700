"""`python -m course_utils doctor`: a clear pass on a good install, a non-zero exit with the fix on a bad one."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from course_utils.paths import REPO_ROOT


def run_doctor(**env):
    import os

    return subprocess.run([sys.executable, "-m", "course_utils", "doctor"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, env={**os.environ, **env})


@pytest.fixture(scope="module")
def doctor_run():
    return run_doctor()


def test_doctor_passes_here(doctor_run):
    out = doctor_run
    assert out.returncode == 0, out.stdout + out.stderr
    for word in ("torch", "bitsandbytes", "device", "offline", "course model checksum", "All checks passed"):
        assert word in out.stdout


def test_doctor_prints_one_plain_line_per_check(doctor_run):
    """A student reads the doctor's output: one line per check, in words, nothing else on stdout or stderr."""
    rows = doctor_run.stdout.split("\n\n")[0].splitlines()
    assert len(rows) >= 15
    for line in rows:
        name, sep, value = line.partition("  ")
        assert sep and name.strip() and value.strip(), f"not a 'check  result' line: {line!r}"
        assert not re.search(r"\b\w+=(True|False|None|pending)\b", line), f"internal flags in: {line!r}"
        assert line.count("=") <= 1 and len(line) <= 130, f"not one plain line: {line!r}"
    assert doctor_run.stderr == "", f"the doctor's output is mixed with: {doctor_run.stderr}"


def test_doctor_lines_say_what_the_guard_and_kernel_do():
    from course_utils import doctor

    assert doctor._nf4_line("native (cc -O3 -shared -fPIC)") == "compiled C kernel (fast path)"
    slow = doctor._nf4_line("off: no C compiler (cc) found")
    assert "plain torch" in slow and "no C compiler" in slow and "-O3" not in slow
    line = doctor._guard_line([])
    assert line.startswith(("on:", "not needed")) and "=" not in line.replace("COURSE_BNB_GUARD=0", "")


def test_doctor_fails_clearly_on_a_corrupted_model(tmp_path, monkeypatch):
    from course_utils import doctor, manifest

    copy = tmp_path / "assets"
    shutil.copytree(REPO_ROOT / "course_utils" / "assets", copy)
    (copy / "course_model" / "config.json").write_text("{}")
    monkeypatch.setattr(manifest, "ASSETS_DIR", copy)
    monkeypatch.setattr(manifest.verify_manifest, "__defaults__", (copy, False))
    rows, problems = doctor.collect()
    assert any("config.json: checksum mismatch" in p and "git checkout" in p for p in problems)
