# The course's two commands (see README):  make lab   |   make test
# Everything lives in ./.venv and ./.cache; nothing is written to your home directory.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A room without internet: with a wheelhouse (`make wheelhouse`, docs/workshop.md) pip installs from it alone.
WHEELHOUSE ?= wheelhouse
PIP_SOURCE := $(if $(wildcard $(WHEELHOUSE)/*.whl),--no-index --find-links $(WHEELHOUSE),)

.PHONY: lab instructor site test test-fast setup doctor ready slides workshop wheelhouse bench rebuild-model notebooks labs-release grade feedback export-grades clean

setup: $(STAMP)

# Re-installs only when the pins change; a half-finished install is never mistaken for a finished one.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}: set PYTHON=/path/to/python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(PIP_SOURCE),@echo "Installing from $(WHEELHOUSE)/ only (no network)")
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_SOURCE) -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Student mode: opens chapter 00, instructor folders hidden (docs/classroom.md). Instructor mode: everything.
lab: setup
	$(PY) -m course_utils lab

instructor: setup
	$(PY) -m course_utils instructor

# The chapters as static HTML (build/site/index.html), to read without running anything.
site: setup
	$(PY) scripts/build_site.py

# Two workers, one per core (conftest.py says what runs together); TEST_JOBS=0 runs everything in one process.
TEST_JOBS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_JOBS)

test-fast: setup
	$(PY) -m pytest -m "not slow"

doctor: setup
	$(PY) -m course_utils doctor

# One line: is this laptop ready for the workshop (docs/workshop.md)?
ready: setup
	$(PY) -m course_utils ready

# The workshop's path (docs/workshop.md): workshop/workshop.ipynb from the chapters' sources; `make slides` runs it
# once, times each block and renders the reveal.js deck build/workshop/workshop.slides.html.
workshop: setup
	$(PY) scripts/build_workshop.py

slides: setup
	$(PY) scripts/build_workshop.py --slides $(if $(ASSETS),--assets $(ASSETS))

# Every pinned wheel, the course's wheel and the course itself in ./wheelhouse (fits a USB stick).
wheelhouse: setup
	$(PY) scripts/build_wheelhouse.py --dest $(WHEELHOUSE)

bench: setup
	$(PY) bench/bench_lora.py
	$(PY) bench/bench_nf4.py

rebuild-model: setup
	$(PY) scripts/build_course_model.py

# Both editions of every chapter from notebooks/src/: the student one (notebooks/) and the executed reference one
# (solutions/notebooks/). `make notebooks ONLY="02 05"` rebuilds only those chapters.
notebooks: setup
	$(PY) scripts/build_notebooks.py $(ONLY)

# Instructor commands (docs/instructor_guide.md). Submissions are graded in a bubblewrap sandbox, GRADE_JOBS at a
# time (one per core: each kernel uses one thread).
GRADE_JOBS ?= 2

labs-release: setup
	$(PY) scripts/build_labs.py

grade: setup
	$(PY) -m course_utils.grading autograde --jobs $(GRADE_JOBS)

feedback: setup
	$(PY) -m course_utils.grading feedback

export-grades: setup
	$(PY) -m course_utils.grading export

clean:
	rm -rf $(VENV) .cache .jupyter .ipython .pytest_cache
