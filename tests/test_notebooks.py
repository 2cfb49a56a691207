"""The notebooks: generated from their sources, not stale, and the solved ones run.

Each solved notebook is executed end to end on CPU with nbclient (slow: minutes per
chapter). The student notebooks are checked for stubs, never executed: their stubs raise.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from utils import notebooks

SOURCES = sorted(notebooks.SOURCES.glob("*.md"))


def test_committed_notebooks_are_fresh():
    assert notebooks.main(["--check"]) == 0, "run `python -m utils.notebooks` and commit the result"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_student_notebook_has_stubs_and_checks(source):
    student, solved = notebooks.build(source)
    student_code = "\n".join(c["source"] for c in student["cells"] if c["cell_type"] == "code")
    solved_code = "\n".join(c["source"] for c in solved["cells"] if c["cell_type"] == "code")
    assert "raise NotImplementedError()" in student_code
    assert "raise NotImplementedError()" not in solved_code
    assert student_code.count("check(") == solved_code.count("check(") > 0


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_solved_notebook_runs(source, tmp_path):
    _, path = notebooks.targets(source)
    notebook = nbformat.read(path, as_version=4)
    # run from a scratch directory: the notebook must not depend on where Jupyter started
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "MPLBACKEND": "Agg"})
    failed = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not failed
    # every check in the solved notebook passes
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "✗" not in text, "a check failed on the reference code"
