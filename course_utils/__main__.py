"""Command line: `python -m course_utils doctor | ready | lab | instructor | env`.

    doctor       is this machine ready for the course? (one line per check)
    ready        the same, in one line: READY, or NOT READY and the first fix (the workshop's pre-check)
    lab          JupyterLab for students: opens chapter 00 (course_utils.lab_modes says what else)
    instructor   JupyterLab with everything visible and nbgrader's Formgrader
    env          the cache variables, as `export` lines

Arguments after `lab` / `instructor` go to JupyterLab unchanged (e.g. --no-browser --ServerApp.port=8899).
"""
from __future__ import annotations

import os
import sys

COMMANDS = ("doctor", "ready", "lab", "instructor", "env")


def _lab(mode: str, extra: list[str]) -> int:
    from . import lab_modes
    from .runtime.paths import REPO_ROOT

    env = lab_modes.launch_env(mode)
    lab_modes.trust_course_notebooks()
    cmd = [sys.executable, "-m", "jupyter", "lab"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers run as root; JupyterLab refuses root without it
    if not _has_browser():
        cmd.append("--no-browser")  # on a server: print the URL instead of warning "No web browser found"
    cmd += extra
    if mode == "student":
        print(f"Starting JupyterLab for students: it opens {lab_modes.STUDENT_LANDING} (the URL it prints below "
              "lands there). Instructors: `make instructor`.", flush=True)
    else:
        print("Starting JupyterLab for instructors: every folder visible, nbgrader's Formgrader in the Nbgrader menu "
              "(docs/instructor_guide.md).", flush=True)
    os.chdir(REPO_ROOT)
    os.execve(sys.executable, cmd, env)


def _has_browser() -> bool:
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv else "doctor"
    if cmd == "doctor":
        from .doctor import doctor

        return 0 if doctor() else 1
    if cmd == "ready":
        from .doctor import ready

        return 0 if ready() else 1
    if cmd == "lab":
        return _lab("student", argv)
    if cmd == "instructor":
        return _lab("instructor", argv)
    if cmd == "env":
        from .runtime.paths import set_cache_env

        for k, v in set_cache_env().items():
            print(f"export {k}={v}")
        return 0
    print(f"unknown command {cmd!r}. Fix: use one of {', '.join(COMMANDS)} (python -m course_utils lab).",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
