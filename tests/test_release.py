"""The two releases (``utils.release``): the self-study one carries every reference solution,
exactly, and nothing the grader would take for the learner's code; the class one carries no
reference code at all."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from utils import notebooks, release
from utils.reports import report_file

SOURCES = notebooks.chapter_sources()
GRADE = [sys.executable, "-m", "utils.grade"]  # the grader's command line, as the README gives it
_SOLUTION = re.compile(r"<details><summary>Solution</summary>\n\n(`{3,})python\n(.*)\n\1\n\n</details>", re.S)


def _exercises(source: Path) -> list[tuple[str, str, str]]:
    """(name, reference source, stub) of each exercise of a chapter, in the chapter's order."""
    module_name, blocks = notebooks.parse(source.read_text(encoding="utf-8"), source.name)
    code = notebooks.definitions(importlib.import_module(f"solutions.{module_name}"))
    found = []
    for block in blocks:
        for line in filter(str.strip, block.text.splitlines()) if block.kind == "exercise" else ():
            name, methods = notebooks.parse_exercise(line)
            found.append((name, code[name], notebooks.stub(code[name], methods)))
    return found


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def _shown_to_learners() -> set[str]:
    """Every line a learner may legitimately see: the prose and its code blocks, the given
    definitions and the stubs, from the sources rather than from a release."""
    shown = set()
    for source in SOURCES:
        text = source.read_text(encoding="utf-8")
        module_name, blocks = notebooks.parse(text, source.name)
        code = notebooks.definitions(importlib.import_module(f"solutions.{module_name}"))
        shown |= _lines(text)
        shown |= {line for b in blocks if b.kind == "given" for name in b.text.split() for line in _lines(code[name])}
        shown |= {line for _, _, stub in _exercises(source) for line in _lines(stub)}
    return shown


def _distinctive(reference: str, stub: str, shown: set[str]) -> set[str]:
    """Lines of the reference that its stub removes and that a learner sees nowhere else,
    long enough not to be boilerplate (``return x``, ``else:``)."""
    return {line for line in _lines(reference) - _lines(stub) - shown if len(line) >= 16}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    assert release.main(["--out", str(out)]) == 0
    return out


def _release_lines(folder: Path) -> set[str]:
    """Every line of every notebook of a release, code and markdown, as a learner sees it."""
    lines = set()
    for path in folder.glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            lines |= _lines(cell.source)
    return lines


def test_one_command_writes_both_releases_and_chapters_holds_the_self_study_one(releases):
    for folder in ("self-study", "class"):
        assert sorted(p.stem for p in (releases / folder).iterdir()) == [s.stem for s in SOURCES]
    for source in SOURCES:
        committed = notebooks.targets(source)[0]
        assert (releases / "self-study" / committed.name).read_text(encoding="utf-8") == \
            committed.read_text(encoding="utf-8")


def test_an_unknown_chapter_is_refused_with_the_list_of_chapters(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        release.main(["--out", str(tmp_path), "6_nothing"])
    assert stopped.value.code == 2
    assert "no chapter source for 6_nothing; the chapters are 1_embedding_arithmetic" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_class_release_holds_no_reference_code(releases):
    shown = _shown_to_learners()
    in_class, in_self_study = _release_lines(releases / "class"), _release_lines(releases / "self-study")
    checked = 0
    for source in SOURCES:
        for name, reference, stub in _exercises(source):
            distinctive = _distinctive(reference, stub, shown)
            assert distinctive, f"{source.stem}: {name} has no line distinctive enough to look for"
            assert distinctive <= in_self_study, f"{name}: the search must find the solution where it is"
            leaked = distinctive & in_class
            assert not leaked, f"{source.stem}: the class release shows {name}'s reference code: {sorted(leaked)}"
            checked += len(distinctive)
    assert checked > 0


def test_each_self_study_exercise_is_followed_by_its_reference_solution(releases):
    for source in SOURCES:
        cells = nbformat.read(releases / "self-study" / f"{source.stem}.ipynb", as_version=4).cells
        stubs = [i for i, c in enumerate(cells) if c.cell_type == "code" and "exercise" in c.metadata]
        expected = _exercises(source)
        assert [cells[i].metadata["exercise"] for i in stubs] == [name for name, _, _ in expected]
        for i, (name, reference, stub) in zip(stubs, expected):
            assert cells[i].source == stub
            assert cells[i + 1].source == f"check({name})"
            shown = _SOLUTION.fullmatch(cells[i + 2].source)
            assert cells[i + 2].cell_type == "markdown" and shown, f"{name}: no collapsed solution under its check"
            assert shown.group(2) == reference, f"{source.stem}: {name}'s solution differs from solutions/"
        solutions = [c for c in cells if c.cell_type == "markdown" and _SOLUTION.search(c.source)]
        assert len(solutions) == len(expected)


def test_the_grader_reads_no_solution_from_a_self_study_notebook(releases, tmp_path):
    """Graded with every stub untouched, each chapter's self-study notebook scores 0 on every
    exercise: the solutions under the stubs, in markdown, are never taken for the learner's code."""
    reports = tmp_path / "reports"
    done = subprocess.run([*GRADE, str(releases / "self-study"), "--out", str(reports), "--jobs", "2"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    for source in SOURCES:
        report = json.loads(report_file(reports, f"{source.stem}.ipynb").read_text(encoding="utf-8"))
        graded = {e["name"]: e for e in report["exercises"]}
        assert set(graded) == {name for name, _, _ in _exercises(source)}
        assert report["score"] == 0 and report["max_score"] > 0
        for name, exercise in graded.items():  # the stub ran: it raised NotImplementedError
            assert exercise["status"] == "error" and "not implemented" in exercise["message"], (name, exercise)
