"""A self-studier's progress (``python -m utils.progress``, ``make progress``): per chapter of
workspace/, which exercises pass, fail or are untouched, as graded by the grader."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from tests.classroom import PARTIAL, PARTIAL_RIGHT, PARTIAL_WRONG, STEM, answered
from utils import progress
from utils.lab import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]


def _workspace(tmp_path: Path) -> Path:
    """A workspace as ``make lab`` first makes it: a copy of every template."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for template in TEMPLATES.glob("*.ipynb"):
        shutil.copyfile(template, workspace / template.name)
    return workspace


def test_no_workspace_yet_says_run_make_lab_first(tmp_path, capsys):
    assert progress.main(["--workspace", str(tmp_path / "workspace")]) == 0
    assert "run `make lab` first" in capsys.readouterr().out


def test_a_workspace_without_chapter_notebooks_says_so(tmp_path, capsys):
    (tmp_path / "notes.ipynb").write_text("{}")
    assert progress.main(["--workspace", str(tmp_path)]) == 0
    assert "No chapter notebooks" in capsys.readouterr().out


def test_a_fresh_workspace_is_all_untouched_and_grades_nothing(tmp_path, capsys):
    started = time.monotonic()
    assert progress.main(["--workspace", str(_workspace(tmp_path))]) == 0
    assert time.monotonic() - started < 10  # nothing to grade: no grader run
    out = capsys.readouterr().out
    for chapter in progress.chapters():
        stubs = progress.template_stubs(TEMPLATES / f"{chapter.stem}.ipynb")
        assert f"({chapter.stem}.ipynb): not started ({len(stubs)} exercises)" in out


def test_untouched_means_the_definition_graded_is_still_the_stub(tmp_path):
    template = TEMPLATES / f"{STEM}.ipynb"
    stubs = progress.template_stubs(template)
    node = nbformat.read(template, as_version=4)
    code = [c for c in node.cells if c.cell_type == "code"]
    # the learner's own bag_of_features in a new cell after the untouched stub: it is graded
    node.cells.append(nbformat.v4.new_code_cell(PARTIAL["bag_of_features"]))
    # their own mean_pool, then the stub again below it (a cell run twice): the stub is graded
    node.cells.insert(node.cells.index(code[0]) + 1, nbformat.v4.new_code_cell(PARTIAL["mean_pool"]))
    # a stub with a line of their own (work started)
    stub_cell = next(c for c in code if c.metadata.get("exercise") == "tensor_product_bind")
    stub_cell.source = stub_cell.source.replace("raise NotImplementedError()", "return roles.T @ fillers")
    path = tmp_path / f"{STEM}.ipynb"
    nbformat.write(node, path)
    not_started = progress.untouched(path, stubs)
    assert "bag_of_features" not in not_started and "tensor_product_bind" not in not_started
    assert "mean_pool" in not_started
    assert not_started == set(stubs) - {"bag_of_features", "tensor_product_bind"}


def test_a_started_chapter_is_graded_pass_fail_untouched(tmp_path):
    """The one test here that runs the grader (one notebook, about 20 s)."""
    workspace = _workspace(tmp_path)
    notebook = workspace / f"{STEM}.ipynb"
    notebook.write_text(answered(notebook, PARTIAL), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "utils.progress", "--workspace", str(workspace)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "5. binding (5_binding.ipynb): 2 pass, 2 fail, 5 untouched" in out
    section = out[out.index("5. binding"):]
    assert all(f"✓ {name}" in section for name in PARTIAL_RIGHT)
    assert all(f"✗ {name}" in section for name in PARTIAL_WRONG)
    assert "· matrix_bind" in section
    assert "Likely mistake" in section  # the grader's feedback on a failure, in one line
    assert "1. embedding arithmetic (1_embedding_arithmetic.ipynb): not started" in out


def test_a_wait_of_more_than_a_few_seconds_is_shown(monkeypatch):
    said = io.StringIO()
    monkeypatch.setattr(sys, "stderr", said)
    with progress.waiting("grading 5_binding.ipynb", after=0.1):
        time.sleep(0.5)
    with progress.waiting("grading 1_embedding_arithmetic.ipynb", after=5):
        pass  # quick: nothing said
    assert said.getvalue() == "grading 5_binding.ipynb...\n"
