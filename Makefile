# Two commands do everything on a fresh machine with Python 3.11:
#   make lab    create .venv, install the pinned requirements, open the course in JupyterLab
#   make test   the same set-up, then every test (hidden checks, notebooks, grader)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: lab test notebooks claims bench

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

lab: $(INSTALLED)
	$(VENV)/bin/jupyter lab --notebook-dir=. chapters/

test: $(INSTALLED)
	$(PY) -m pytest

notebooks: $(INSTALLED)
	$(PY) -m utils.notebooks

claims: $(INSTALLED)
	$(PY) -m utils.claims record

bench: $(INSTALLED)
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done
