"""The notebooks: generated from their sources, not stale, and the solved ones run and
make exactly the claims their prose states.

Each solved notebook is executed end to end on CPU with nbclient (slow: minutes per
chapter), from a scratch directory, recording its claims (``utils.claims``), once per test
session (the ``executed`` fixture of tests/conftest.py, which the site's tests share). The
learners' notebooks (self-study and class editions) are checked for stubs, never executed:
their stubs raise. One chapter also goes through nbval (``utils.cells``), cell by cell.
"""

import xml.etree.ElementTree as ET

import nbformat
import pytest

from utils import cells, claims, notebooks

SOURCES = sorted(notebooks.SOURCES.glob("*.md"))
STEMS = [s.stem for s in SOURCES]


def test_committed_notebooks_are_fresh():
    assert notebooks.main(["--check"]) == 0, "run `python -m utils.notebooks` and commit the result"


def test_nbval_reports_every_cell_of_a_solved_notebook(tmp_path):
    """``make nbval`` on the quickest chapter: one passing pytest item per code cell."""
    stem = "3_toy_superposition"
    report = tmp_path / "cells.xml"
    assert cells.run([stem], ["-q", f"--junitxml={report}"]) == 0
    items = list(ET.parse(report).getroot().iter("testcase"))
    solved = nbformat.read(notebooks.targets(notebooks.SOURCES / f"{stem}.md")[1], as_version=4)
    assert len(items) == sum(cell.cell_type == "code" for cell in solved.cells)
    assert not [item.get("name") for item in items if len(item)], "a cell failed, errored or was skipped"


def test_the_source_reader_takes_only_top_level_fences_as_cells():
    """A ```python block shown inside a longer fence or a list item is prose; +++ breaks prose;
    a block left open is an error that says where it starts."""
    source = ("<!-- module: m -->\n# Title\n````markdown\n```python\nshown = 1\n```\n````\n\n+++\n\n"
              "More.\n```python\nrun = 2\n```\n- a list item\n\n  ```python\n  listed = 3\n  ```\n")
    module, blocks = notebooks.parse(source)
    assert module == "m"
    assert [(b.kind, b.text.splitlines()[0]) for b in blocks] == [
        ("markdown", "# Title"), ("markdown", "More."), ("python", "run = 2"), ("markdown", "- a list item")]
    with pytest.raises(ValueError, match="the ```exercise block at line 3 is never closed"):
        notebooks.parse("<!-- module: m -->\ntext\n```exercise\nnormalize_rows\n")


@pytest.mark.parametrize("source", SOURCES, ids=STEMS)
def test_learner_notebooks_have_stubs_and_checks(source):
    code = {edition: "\n".join(c["source"] for c in notebook["cells"] if c["cell_type"] == "code")
            for edition, notebook in notebooks.build(source).items()}
    assert "raise NotImplementedError()" in code["self-study"]
    assert code["class"] == code["self-study"], "the editions differ only in their solution cells"
    assert "raise NotImplementedError()" not in code["solved"]
    assert code["self-study"].count("check(") == code["solved"].count("check(") > 0


@pytest.mark.parametrize("source", SOURCES, ids=STEMS)
def test_every_number_in_the_prose_is_a_claim(source):
    found = claims.literal_numbers(source.read_text(encoding="utf-8"))
    assert not found, f"numbers typed into the prose (make each a {{{{claim}}}}): {found}"


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=STEMS)
def test_solved_notebook_runs(source, executed):
    notebook, _ = executed(source.stem)
    failed = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not failed
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "✗" not in text, "a check failed on the reference code"


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=STEMS)
def test_the_run_agrees_with_the_prose(source, executed):
    _, made = executed(source.stem)
    recorded = claims.load_table(source.stem)
    assert set(claims.claim_names(source.read_text(encoding="utf-8"))) <= set(recorded)
    assert not claims.disagreements(recorded, made)
