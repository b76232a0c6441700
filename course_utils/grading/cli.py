"""python -m course_utils.grading release | collect | autograde | feedback | export  (see the package docstring)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..paths import REPO_ROOT
from .batch import UNSAFE_FLAG, autograde
from .course import GradingBroken, load_course
from .feedback import feedback
from .labs import LABS
from .release import collect, release
from .reports import export
from .sandbox import SandboxUnavailable


def _parser() -> argparse.ArgumentParser:
    def common(parser, default):
        # accepted before or after the command; SUPPRESS keeps a subcommand from erasing the global value
        parser.add_argument("--course-dir", default=default(str(REPO_ROOT)), help="course root (default: this repo)")
        parser.add_argument("--lab", action="append", choices=LABS, default=default(None),
                            help="only this lab (repeatable); default: all")

    p = argparse.ArgumentParser(prog="python -m course_utils.grading",
                                description="Instructor commands for the nbgrader labs.")
    common(p, lambda v: v)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name, help_):
        c = sub.add_parser(name, help=help_)
        common(c, lambda v: argparse.SUPPRESS)
        return c

    command("release", "regenerate labs/ from solutions/ (nbgrader generate_assignment)")
    c = command("collect", "copy downloaded submissions into nbgrader/submitted/")
    c.add_argument("--from", dest="inbox", required=True, help="folder holding <student>/<lab>.ipynb files")
    a = command("autograde", "grade every submission in nbgrader/submitted/, each in its own sandbox")
    a.add_argument("--student", action="append", help="only this student (repeatable)")
    a.add_argument("--roster", help="text file, one student id per line: they get a row (0) even without a submission")
    a.add_argument("--timeout", type=float, help="seconds per cell (default: nbgrader_config.py)")
    a.add_argument("--notebook-timeout", type=float, help="seconds per notebook (default: nbgrader_config.py)")
    a.add_argument("--jobs", "-j", type=int, default=1,
                   help=f"submissions graded at once, each in its own sandbox (this machine has {os.cpu_count()} cores)")
    a.add_argument(UNSAFE_FLAG, dest="unsandboxed", action="store_true",
                   help="run notebooks WITHOUT the sandbox, with your rights: only for notebooks you wrote yourself")
    command("feedback", "HTML feedback for every autograded submission")
    e = command("export", "write grades.csv from the gradebook")
    e.add_argument("--out", help="CSV path (default: grades.csv in the course root)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    labs = tuple(args.lab or LABS)
    try:
        course = load_course(args.course_dir, timeout=getattr(args, "timeout", None),
                             notebook_timeout=getattr(args, "notebook_timeout", None))
        if args.cmd == "release":
            return 0 if release(course, labs) else 1
        if args.cmd == "collect":
            collect(course, args.inbox, labs)
            return 0
        if args.cmd == "autograde":
            if args.jobs < 1:
                raise GradingBroken(f"--jobs {args.jobs}: give at least 1")
            roster = Path(args.roster).read_text().split() if args.roster else ()
            _, problems = autograde(course, labs, students=args.student, roster=roster, jobs=args.jobs,
                                    sandboxed=not args.unsandboxed)
            return 1 if problems else 0
        if args.cmd == "feedback":
            return 0 if feedback(course, labs) else 1
        if args.cmd == "export":
            export(course, args.out, labs)
            return 0
    except SandboxUnavailable as e:
        print(f"error: refusing to grade: {e} (To grade notebooks you wrote yourself without a sandbox, pass "
              f"{UNSAFE_FLAG}.)", file=sys.stderr)
        return 2
    except (FileNotFoundError, GradingBroken) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 2
