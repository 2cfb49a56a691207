# Two commands do everything on a fresh machine with Python 3.11:
#   make lab    create .venv, install the pinned requirements, open your workspace/ in JupyterLab
#   make test   the same set-up, then every test (hidden checks, notebooks, grader)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: lab test notebooks claims bench site release browser progress grade nbval

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

# the solved notebooks through nbval, a pytest report per cell (make nbval CHAPTERS=3_toy_superposition)
nbval: $(INSTALLED)
	$(PY) -m utils.cells $(CHAPTERS)

claims: $(INSTALLED)
	$(PY) -m utils.claims record

bench: $(INSTALLED)
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

site: $(INSTALLED)
	$(PY) -m utils.site $(CHAPTERS)

release: $(INSTALLED)
	$(PY) -m utils.release $(CHAPTERS)

# a self-studier's progress: which exercises of workspace/ pass, fail, are untouched
progress: $(INSTALLED)
	$(PY) -m utils.progress

# an instructor's grading of a folder of submissions: reports in OUT, feedback in OUT/feedback
# (make grade CLASS=submissions/ OUT=reports/ [GRADE_OPTIONS="--chapter binding --timeout 30"])
grade: $(INSTALLED)
	@test -n "$(CLASS)" -a -n "$(OUT)" || { echo "usage: make grade CLASS=FOLDER_OF_SUBMISSIONS OUT=REPORTS_FOLDER"; exit 2; }
	$(PY) -m utils.grade $(CLASS) --out $(OUT) --jobs 2 --format json,csv,junit,gradescope $(GRADE_OPTIONS)
	$(PY) -m utils.feedback $(OUT) --out $(OUT)/feedback

# headless Chromium for the browser test of the site (tests/test_site.py), from Debian's packages
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	else \
		echo "install Debian's chromium and chromium-driver as root (apt-get install chromium chromium-driver);"; \
		echo "without them the browser test is skipped"; exit 1; \
	fi
