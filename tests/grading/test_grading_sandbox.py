"""course_utils.grading.sandbox and .kernel: what a graded kernel can see and do, its limits, and its end."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import processes_with, require_sandbox

from course_utils.grading import sandbox
from course_utils.grading.kernel import Kernel
from course_utils.grading.sandbox import Limits, Sandbox

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_bwrap_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/nonexistent/bwrap")
    why = sandbox.problem()
    assert "bubblewrap" in why and "apt-get install -y bubblewrap" in why and "\n" not in why
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.require()


def test_the_box_mounts_only_python_the_venv_and_course_utils(tmp_path):
    cmd = Sandbox(Limits(), bwrap="bwrap").command(["python"], tmp_path)
    assert {"--die-with-parent", "--unshare-pid", "--unshare-net", "--clearenv"} <= set(cmd)
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind")]
    writable = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"]
    assert writable == [str(tmp_path)], "the run folder is the only host folder it may write"
    for b in binds:
        inside_repo = Path(b).resolve().is_relative_to(ROOT)
        assert not inside_repo or Path(b).name in ("course_utils", ".venv"), f"{b} should not be visible"
    assert "prlimit" in cmd and any(a.startswith("--nproc=") for a in cmd)
    if os.geteuid() == 0:
        assert "setpriv" in cmd, "as root the kernel drops to a uid of its own (RLIMIT_NPROC ignores root)"


CHECKS = {
    "sees": "import os; print(sorted(os.listdir(%r)))" % str(ROOT),
    "uid": "import os; print(os.getuid())",
    "secrets": "print([os.path.exists(%r) for _ in [0]])" % str(ROOT / "solutions"),
    "write_package": "open(%r, 'w')" % str(ROOT / "course_utils" / "planted.py"),
    "network": "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)",
    "processes": ("import os, time\npids = []\ntry:\n    for _ in range(500):\n        pid = os.fork()\n"
                  "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        pids.append(pid)\n"
                  "finally:\n    for p in pids:\n        os.kill(p, 9)\n        os.waitpid(p, 0)\n"),
    "outlive": ("import subprocess; subprocess.Popen(['sh', '-c', 'sleep 120 # sandbox-test-marker'], "
                "start_new_session=True)"),
}


@pytest.fixture(scope="module")
def ran():
    require_sandbox()
    limits = Limits(processes=48, cell_timeout=30)
    with Kernel(Sandbox(limits), limits, sys.executable) as k:
        out = {name: k.run(code, 30) for name, code in CHECKS.items()}
    return out


def _text(run):
    return "".join(o.get("text", "") for o in run.outputs)


def test_it_sees_only_the_package_and_the_environment(ran):
    assert ran["sees"].status == "ok"
    assert set(eval(_text(ran["sees"]))) <= {"course_utils", ".venv", ".cache"}
    assert _text(ran["secrets"]).strip() == "[False]"


def test_it_cannot_write_the_course_or_reach_the_network(ran):
    assert ran["write_package"].ename in ("OSError", "PermissionError")
    assert "Read-only" in ran["write_package"].evalue or "Permission" in ran["write_package"].evalue
    assert ran["network"].status == "error" and ran["network"].ename in ("OSError", "ConnectionRefusedError")


def test_it_is_not_root_and_its_processes_are_counted(ran):
    if os.geteuid() == 0:
        assert int(_text(ran["uid"])) >= sandbox.SANDBOX_UID
    assert ran["processes"].ename == "BlockingIOError", ran["processes"]


def test_nothing_it_started_outlives_it(ran):
    assert ran["outlive"].status == "ok"
    assert processes_with("sandbox-test-marker") == []
