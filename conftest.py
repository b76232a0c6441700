"""Loaded by pytest for every path it collects (tests/, the reference notebooks, the lab solutions), so
`pytest solutions/notebooks/05_lora_idea.ipynb` runs nbval in the same environment as `make test`: the one
scripts store notebook outputs under (course_utils.paths.notebook_env), offline, network blocked."""
from __future__ import annotations

import os

import pytest

from course_utils.runtime.paths import notebook_env, set_cache_env
from course_utils.runtime.netguard import block_network

# notebook_env() builds on the caller's environment (PATH included), so compute it before replacing it.
_env = notebook_env()
os.environ.clear()
os.environ.update(_env)
set_cache_env(force=True)
block_network()


# `make test` runs two pytest workers (pytest-xdist): the suite is mostly one-threaded notebook kernels, so two of
# them use both cores. A group runs whole on one worker, in collection order: a file (a notebook's cells share one
# kernel, a module its fixtures), and all of tests/grading/ (its modules share one graded batch).
def _group(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return "tests/grading/" if path.startswith("tests/grading/") else path


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # xdist's own loadgroup marks are lost on pytest 9's node ids
        def _split_scope(self, nodeid):
            return _group(nodeid)

    return ByGroup(config, log)


def pytest_configure(config):
    """Once, before any worker starts: what the tests on one worker would otherwise create while the other grades
    (and the grading tests check that nothing in the course tree changes): byte code, the cache folders and the
    native NF4 kernel, compiled on first use."""
    if hasattr(config, "workerinput"):
        return
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent
    for folder in ("course_utils", "scripts", "tests"):
        compileall.compile_dir(root / folder, quiet=1)
    for folder in (".cache", ".jupyter", ".ipython"):
        (root / folder).mkdir(exist_ok=True)
    from course_utils.nf4 import native

    native.available()


def pytest_collection_modifyitems(config, items):
    # The two longest groups start first, one on each worker; the short ones fill in behind them.
    first = {"tests/test_browser.py": 0, "tests/grading/": 1}
    items.sort(key=lambda it: first.get(_group(it.nodeid), 2))
