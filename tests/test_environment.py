"""The pinned stack: one set of versions, written twice (pip and conda), installed as written."""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"requirements.txt line {line!r} is not pinned with =="
            pins[name.lower()] = ver
    return pins


def conda_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    pins = {m[0].lower(): m[1] for m in re.findall(r"^\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", text, re.M)}
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M), "environment.yml must pin python=3.11"
    return pins


def test_pip_and_conda_pins_agree():
    pip, conda = pip_pins(), conda_pins()
    assert pip == conda, f"pins differ: only pip {set(pip.items()) - set(conda.items())}, only conda {set(conda.items()) - set(pip.items())}"


def test_required_packages_are_pinned():
    pins = pip_pins()
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "matplotlib", "jupyterlab", "nbgrader", "nbval"):
        assert pkg in pins, f"{pkg} must be pinned"
    # The CPU wheel for exactly this version is what keeps installs small; a looser pin pulls a CUDA build.
    assert pins["torch"] == "2.13.0"


@pytest.mark.parametrize("pkg", sorted(pip_pins()))
def test_installed_versions_match_pins(pkg):
    installed = version(pkg).split("+")[0]  # torch reports 2.13.0+cpu
    assert installed == pip_pins()[pkg], f"{pkg}: installed {installed}, pinned {pip_pins()[pkg]}; run `make setup`"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make lab" in readme
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"


def test_caches_are_inside_the_repo():
    import os

    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR", "HF_HOME"):
        assert Path(os.environ[key]).resolve().is_relative_to(ROOT), f"{key}={os.environ[key]} is outside the repo"
    ignored = (ROOT / ".gitignore").read_text()
    for folder in (".cache/", ".jupyter/", ".ipython/", ".venv/"):
        assert folder in ignored
