# Two commands do everything on a fresh machine with Python 3.11:
#   make lab    create .venv, install the pinned requirements, open your workspace/ in JupyterLab
#   make test   the same set-up, then every test (hidden checks, notebooks, grader)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: lab test notebooks claims bench

$(INSTALLED): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info[:2] == (3, 11) else "The course needs Python 3.11 (the pins are for it), found " + sys.version.split()[0] + ": install 3.11, or run make PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

lab: $(INSTALLED)
	$(PY) -m utils.lab

test: $(INSTALLED)
	$(PY) -m pytest

notebooks: $(INSTALLED)
	$(PY) -m utils.notebooks

claims: $(INSTALLED)
	$(PY) -m utils.claims record

bench: $(INSTALLED)
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done
