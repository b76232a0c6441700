"""Command line: `python -m course_utils doctor | lab | env`."""
from __future__ import annotations

import os
import sys


def _lab(extra: list[str]) -> int:
    from .paths import REPO_ROOT

    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={REPO_ROOT}", "notebooks/00_setup.ipynb"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers run as root; JupyterLab refuses root without it
    cmd += extra
    print("Starting JupyterLab on the course:", " ".join(cmd[2:]), flush=True)
    os.chdir(REPO_ROOT)
    os.execv(sys.executable, cmd)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv else "doctor"
    if cmd == "doctor":
        from .doctor import doctor

        return 0 if doctor() else 1
    if cmd == "lab":
        return _lab(argv)
    if cmd == "env":
        from .paths import set_cache_env

        for k, v in set_cache_env().items():
            print(f"export {k}={v}")
        return 0
    print(f"unknown command {cmd!r}; use one of: doctor, lab, env", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
