"""The instructor's flow, end to end, as docs/instructor.md gives it, on a simulated class of
five learners for chapter 5: release the class edition -> collect one notebook per learner
-> grade (``make grade``: the grader's command line, then the feedback pages) -> gradebook,
feedback pages, Gradescope and JUnit.

The five: alice hands in the solved notebook, bob a partial one (two exercises right, two
plausibly wrong), carol the class release untouched, dave a truncated file, and eve code
that exits the process, prints megabytes and loops forever (graded with a 5 s timeout).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.classroom import CHAPTER, HOSTILE, PARTIAL, PARTIAL_RIGHT, PARTIAL_WRONG, STEM, answered
from utils import notebooks
from utils.feedback import write_feedback
from utils.reports import read_report, read_reports, report_file

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LEARNERS = ["alice", "bob", "carol", "dave", "eve"]
HANDED_IN = [f"{learner}.ipynb" for learner in LEARNERS]  # what the batch files name them by
TIMEOUT_S = 5  # per exercise: eve's infinite loop costs this once


def _run(*command: str) -> subprocess.CompletedProcess:
    done = subprocess.run([PYTHON, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def course(tmp_path_factory, measured):
    """The whole flow, once: the folders it wrote, and seconds per step."""
    base = tmp_path_factory.mktemp("class")
    seconds = {}

    started = time.monotonic()
    _run("utils.release", STEM, "--out", str(base / "release"))
    handed_out = base / "release" / "class" / f"{STEM}.ipynb"
    seconds["release"] = time.monotonic() - started

    # what comes back from the class: one file per learner, named by learner
    submissions = base / "submissions"
    submissions.mkdir()
    shutil.copyfile(notebooks.targets(notebooks.SOURCES / f"{STEM}.md")[1], submissions / "alice.ipynb")
    (submissions / "bob.ipynb").write_text(answered(handed_out, PARTIAL), encoding="utf-8")
    shutil.copyfile(handed_out, submissions / "carol.ipynb")
    text = handed_out.read_text(encoding="utf-8")
    (submissions / "dave.ipynb").write_text(text[: len(text) // 2], encoding="utf-8")  # an upload cut short
    (submissions / "eve.ipynb").write_text(answered(handed_out, HOSTILE), encoding="utf-8")

    started = time.monotonic()  # step 3 as the page gives it: make grade (the grader, then the pages)
    reports = base / "reports"
    grading = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "grade", f"PY={PYTHON}",
                              f"CLASS={submissions}", f"OUT={reports}",
                              f"GRADE_OPTIONS=--chapter {CHAPTER} --timeout {TIMEOUT_S} --quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert grading.returncode == 0, f"make grade failed:\n{grading.stdout}\n{grading.stderr}"
    seconds["make grade"] = time.monotonic() - started
    measured("instructor flow: " + ", ".join(f"{step} {s:.1f} s" for step, s in seconds.items()))
    return {"handed_out": handed_out, "reports": reports, "feedback": reports / "feedback"}


def test_the_class_release_is_what_carol_hands_in_untouched(course):
    assert "Solution" not in course["handed_out"].read_text(encoding="utf-8")


def test_the_five_scores(course, measured):
    reports = read_reports(course["reports"])
    assert sorted(reports) == LEARNERS
    scores = {learner: (r.score, r.max_score) for learner, r in reports.items()}
    measured(f"instructor flow scores: {scores}")
    full = reports["alice"].max_score
    assert full == len(reports["alice"].exercises) > 0
    assert scores["alice"] == (full, full)
    assert scores["carol"] == (0, full)
    assert 0 < scores["bob"][0] < full
    bob = {e.name: e for e in reports["bob"].exercises}
    assert all(bob[name].status == "passed" for name in PARTIAL_RIGHT)
    assert all(bob[name].status != "passed" for name in PARTIAL_WRONG)


def test_the_broken_notebook_scores_zero_with_a_clear_message(course):
    dave = read_report(report_file(course["reports"], "dave.ipynb"))
    assert dave.score == 0
    assert any("not valid notebook JSON" in error and "saved completely" in error for error in dave.errors)
    page = (course["feedback"] / "dave.md").read_text(encoding="utf-8")
    assert "not valid notebook JSON" in page and "score is 0" in page


def test_the_hostile_learner_does_not_take_the_grader_down(course):
    eve = read_report(report_file(course["reports"], "eve.ipynb"))  # make grade exited 0 and reported
    graded = {e.name: e for e in eve.exercises}
    assert graded["tensor_product_unbind"].status == "passed"  # the right answer still counts
    assert graded["tensor_product_bind"].status == "passed"  # megabytes printed, result right
    assert graded["bag_of_features"].status == "error" and "sys.exit" in graded["bag_of_features"].message
    assert graded["mean_pool"].status == "timeout"
    assert eve.score == 2
    assert report_file(course["reports"], "eve.ipynb").stat().st_size < 100_000  # none of the spam
    assert (course["feedback"] / "eve.md").stat().st_size < 100_000


def test_gradebook_junit_and_gradescope(course):
    with open(course["reports"] / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["submission"] for row in rows] == HANDED_IN
    assert float(rows[0]["score"]) == float(rows[0]["max_score"])

    suites = ET.parse(course["reports"] / "junit.xml").getroot().findall("testsuite")
    assert [suite.get("name") for suite in suites] == HANDED_IN
    assert all(len(suite.findall("testcase")) == len(rows[0]) - 4 for suite in suites)

    for submission in HANDED_IN:
        results = json.loads((course["reports"] / "gradescope" / submission / "results.json").read_text(encoding="utf-8"))
        assert {"score", "tests"} <= results.keys()
        assert all({"name", "score", "max_score", "status", "output"} <= test.keys() for test in results["tests"])


def test_a_feedback_page_names_the_mistake_and_never_the_hidden_checks(course):
    page = (course["feedback"] / "bob.md").read_text(encoding="utf-8")
    bob = {e.name: e for e in read_report(report_file(course["reports"], "bob.ipynb")).exercises}
    for name in PARTIAL_WRONG:
        mistakes = [line.removeprefix("✗").strip() for line in bob[name].message.splitlines()
                    if "Likely mistake" in line]
        assert mistakes, f"the grader gave no likely mistake for {name}: {bob[name].message}"
        assert f"`{name}`" in page and all(mistake in page for mistake in mistakes)
    assert "Still the stub handed out" in page and "`matrix_bind`" in page

    hidden = ROOT / "tests" / f"test_{CHAPTER}.py"
    lines = {line.strip() for line in hidden.read_text(encoding="utf-8").splitlines() if len(line.strip()) >= 10}
    for learner in LEARNERS:
        text = (course["feedback"] / f"{learner}.md").read_text(encoding="utf-8")
        leaked = [line for line in lines if line in text]
        assert not leaked, f"{learner}'s feedback shows the hidden checks: {leaked[:3]}"


def test_the_feedback_index_lists_every_learner(course):
    index = (course["feedback"] / "index.md").read_text(encoding="utf-8")
    assert all(f"[{learner}]({learner}.md)" in index for learner in LEARNERS)


def test_feedback_pages_of_learners_in_subfolders_stay_apart(tmp_path):
    """``x/dup.ipynb`` and ``x__dup.ipynb`` are two learners, with two pages the index links;
    ``y.py`` beside ``y.ipynb`` keep their whole names."""
    reports = tmp_path / "reports"
    reports.mkdir()
    for submission, score in [("x/dup.ipynb", 1.0), ("x__dup.ipynb", 0.0), ("y.py", 0.0), ("y.ipynb", 1.0)]:
        report = {"submission": submission, "chapter": CHAPTER, "score": score, "max_score": 1.0,
                  "exercises": [{"name": "bind", "status": "passed" if score else "failed", "score": score,
                                 "max_score": 1.0, "message": ""}]}
        report_file(reports, submission).write_text(json.dumps(report), encoding="utf-8")
    written = write_feedback(reports, tmp_path / "feedback")
    assert sorted(written) == ["x/dup", "x__dup", "y.ipynb", "y.py"] and len(set(written.values())) == 4
    assert "Score: **1 / 1**" in written["x/dup"].read_text(encoding="utf-8")
    index = (tmp_path / "feedback" / "index.md").read_text(encoding="utf-8")
    assert all(f"]({page.name})" in index for page in written.values())


@pytest.mark.parametrize("setup, message", [
    (lambda tmp: tmp / "nowhere", "no such folder of reports"),
    (lambda tmp: tmp, "no grader reports"),
], ids=["missing folder", "empty folder"])
def test_feedback_refuses_a_folder_without_reports(tmp_path, setup, message):
    done = subprocess.run([PYTHON, "-m", "utils.feedback", str(setup(tmp_path)), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr


def test_the_readme_keeps_two_set_up_commands_and_links_this_flow_below_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make lab", "make test"]
    assert readme.index("(docs/instructor.md)") > readme.index(first_block)
    assert (ROOT / "docs" / "instructor.md").is_file()


def test_the_page_quoted_in_docs_is_what_the_flow_writes(course):
    """docs/instructor.md quotes bob's page: its headings, table and lists must still be what
    utils.feedback writes (the grader's measured differences may vary with the machine)."""
    docs = (ROOT / "docs" / "instructor.md").read_text(encoding="utf-8")
    quoted = docs.split("````markdown\n", 1)[1].split("````", 1)[0]
    written = (course["feedback"] / "bob.md").read_text(encoding="utf-8")

    def structure(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith(("#", "|", "Still", "Chapter"))]
    assert structure(quoted) == structure(written)
