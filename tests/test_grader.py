"""The grader (``python -m utils.grade``) against a hostile class: each submission in
``tests/submissions/`` gets the report asserted here, one test per item of the grader's
threat list (privileges, limits, other students' files, the hidden checks, fake answers,
time, batch outputs, a broken installation, printing).

The corpus is graded once, the way an instructor runs it: from a course folder that is
a copy of this repository (so the interpreter's editable install points elsewhere), with
``cd class && python -m utils.grade submissions --out reports``. Every test passes when
run as root (then the sandbox drops to a dedicated user, with cgroups) and as an
unprivileged user (then a user namespace and the watchdog hold the limits).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from utils.checks import load_suite
from utils.grading.cli import Found, grade_one, main
from utils.grading.reports import Policy
from utils.grading.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "submissions"
SOLVED = ROOT / "solutions" / "1_embedding_arithmetic_solved.ipynb"
CHAPTER = "embedding_arithmetic"
EXERCISES = load_suite(CHAPTER).exercises
SECRET = "correct horse battery staple"
MEMORY_MB, TIMEOUT, BUDGET = 1024, 20, 60
AS_ROOT = os.geteuid() == 0
# graded by their own tests, with limits of their own: a chapter-3 submission, and two that
# would hold the whole batch for its time budget
GRADED_APART = ("fake_training.py", "hanging_definitions.py", "exiting_definitions.py")


def _exercises(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["exercises"]}


def _observed(report: dict, exercise: str) -> dict[str, str]:
    """What a corpus function reported about itself: ``observed key=value ...``."""
    message = _exercises(report)[exercise]["message"]
    assert "RuntimeError: observed " in message, message
    words = message.split("RuntimeError: observed ", 1)[1].split(" (at <")[0].split()
    return dict(word.split("=", 1) for word in words if "=" in word)


def _course_copy(destination: Path) -> Path:
    """A course folder: this repository's code, checks and solutions, and nothing of its own
    installation (the interpreter's editable install still points at this checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "submissions")
    for name in ("utils", "solutions", "tests"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    return destination


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Grade the corpus once, from a course folder, as a separate process."""
    course = _course_copy(tmp_path_factory.mktemp("course"))
    submissions = course / "submissions"
    shutil.copytree(CORPUS, submissions, ignore=shutil.ignore_patterns(*GRADED_APART))
    for name, placeholder, value in (("tamper.py", "REPORT_DIRECTORY = None", course / "reports"),
                                     ("peek.py", "CLASS_DIRECTORY = None", course)):
        text = (submissions / name).read_text()  # the student knows where things are
        (submissions / name).write_text(text.replace(placeholder, f"{placeholder.split(' =')[0]} = {str(value)!r}"))
    (submissions / "again").mkdir()
    shutil.copy(CORPUS / "crashes.py", submissions / "again" / "crashes_again.py")
    shutil.copy(SOLVED, submissions / SOLVED.name)
    (submissions / "linked.ipynb").symlink_to(SOLVED)
    (submissions / "nested.ipynb").write_text("[" * 100_000)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "utils.grade", "submissions", "--out", "reports", "--jobs", "2",
         "--timeout", str(TIMEOUT), "--budget", str(BUDGET), "--memory", str(MEMORY_MB),
         "--points", "normalize_rows=3", "--format", "json,gradescope,junit,csv", "--quiet"],
        cwd=course, env={**os.environ, "GRADER_SECRET": SECRET}, capture_output=True, text=True, timeout=900)
    out = course / "reports"
    reports = {r["submission"]: r for r in map(lambda p: json.loads(p.read_text()), out.glob("*.json"))}
    return {"status": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "out": out,
            "reports": reports, "course": course, "seconds": time.monotonic() - started}


# --------------------------------------------------------------------------- the command


def test_every_submission_gets_a_report_in_every_format(corpus):
    out, reports = corpus["out"], corpus["reports"]
    assert corpus["status"] == 0, corpus["stderr"][-3000:]
    expected = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.suffix in (".py", ".ipynb")}
    expected |= {"again/crashes_again.py", SOLVED.name, "linked.ipynb", "nested.ipynb"}
    expected -= set(GRADED_APART)
    assert set(reports) == expected
    for name, report in reports.items():
        assert set(report) >= {"submission", "chapter", "score", "max_score", "exercises", "errors", "sandbox"}
        for exercise in report["exercises"]:
            assert set(exercise) == {"name", "status", "score", "max_score", "message", "checks_passed", "checks"}
            assert exercise["status"] in ("passed", "failed", "error", "timeout", "missing")
        assert "internal error" not in json.dumps(report), report
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert [r["submission"].lstrip("'") for r in rows] == sorted(expected)
    junit = ET.parse(out / "junit.xml").getroot()
    assert [s.get("name") for s in junit.findall("testsuite")] == sorted(expected)
    for name, report in reports.items():
        results = json.loads((out / "gradescope" / Path(_report_file(out, name)).stem / "results.json").read_text())
        assert results["score"] == report["score"]


def _report_file(out: Path, name: str) -> str:
    matches = [p.name for p in out.glob("*.json") if json.loads(p.read_text())["submission"] == name]
    assert len(matches) == 1, (name, matches)
    return matches[0]


def test_bad_usage_exits_with_2(tmp_path, capsys):
    for argv in ([str(tmp_path / "nowhere.ipynb"), "--out", str(tmp_path)],
                 [str(SOLVED), "--out", str(tmp_path), "--format", "pdf"],
                 [str(SOLVED), "--out", str(tmp_path), "--chapter", "astrology"],
                 [str(SOLVED), "--out", str(tmp_path), "--jobs", "0"],
                 [str(SOLVED), "--out", str(tmp_path), "--shard", "3/3"],
                 [str(tmp_path), "--merge", "--out", str(tmp_path / "merged")],
                 [str(SOLVED)]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
    err = capsys.readouterr().err
    assert "no such file" in err and "--shard takes K/N" in err and "no reports in" in err


def test_reference_notebook_scores_full_marks(corpus):
    report = corpus["reports"][SOLVED.name]
    assert report["chapter"] == CHAPTER and report["errors"] == []
    assert [e["name"] for e in report["exercises"]] == EXERCISES
    assert all(e["status"] == "passed" for e in report["exercises"]), report
    assert _exercises(report)["normalize_rows"]["max_score"] == 3.0  # --points
    assert report["score"] == report["max_score"] == len(EXERCISES) + 2


def test_cheating_earns_nothing(corpus):
    """Attacks that fail whatever the kernel allows: comparisons happen in the grader."""
    exercises = _exercises(corpus["reports"]["tamper.py"])
    expected = {
        "normalize_rows": ("error", "No module named 'solutions' (not available while grading)"),
        "cosine_similarity": ("error", "AlwaysEqual; return torch tensors"),  # always-equal object
        "analogy_3cosmul": ("failed", "are wrong"),  # prints "All tests passed", writes reports
        "project_onto_span": ("error", "something else than answers into the grader's channel"),  # forgery
        "analogy_scores": ("failed", "are wrong"),  # patched torch.allclose, numpy.testing, checks
        "evaluate_analogies": ("error", "Error"),  # the network
    }
    for name, (status, words) in expected.items():
        assert exercises[name]["status"] == status, exercises[name]
        assert words in exercises[name]["message"], exercises[name]
        assert exercises[name]["score"] == 0


def test_solutions_and_reports_are_out_of_reach(corpus):
    """Reading the reference or writing reports: the file system is closed (Landlock), or,
    below a private directory such as /tmp/pytest-of-root, not even there."""
    report = corpus["reports"]["tamper.py"]
    assert any(layer.startswith("landlock") for layer in report["sandbox"]), report["sandbox"]
    exercises = _exercises(report)
    for name in ("nearest_neighbours", "analogy_3cosadd"):  # reads / imports solutions/
        assert exercises[name]["status"] == "error", exercises[name]
        assert "PermissionError: [Errno 13] Permission denied" in exercises[name]["message"] or \
            "FileNotFoundError: [Errno 2] No such file or directory" in exercises[name]["message"]
    assert report["score"] == 0
    assert sorted(p.name for p in corpus["out"].iterdir() if "tamper" in p.name) == ["tamper.py.json"]
    assert not (corpus["out"] / "planted.txt").exists()


def test_crashes_cost_only_their_exercise(corpus):
    report = corpus["reports"]["crashes.py"]
    exercises = _exercises(report)
    expected = {
        "normalize_rows": ("passed", "all 3 checks passed"),
        "cosine_similarity": ("timeout", f"longer than {TIMEOUT} s"),
        "nearest_neighbours": ("error", "sys.exit('nothing more to do')"),
        "analogy_3cosadd": ("error", "exited (exit code 3)"),
        "analogy_3cosmul": ("error", "segmentation fault"),
        "project_onto_span": ("passed", "all 3 checks passed"),
        "analogy_scores": ("error", "allocate memory"),
        "evaluate_analogies": ("error", "not implemented yet"),
    }
    for name, (status, words) in expected.items():
        assert exercises[name]["status"] == status, exercises[name]
        assert words in exercises[name]["message"], exercises[name]
    assert report["score"] == 3 + 1


def test_no_process_outlives_grading(corpus):
    deadline = time.monotonic() + 5  # SIGKILL is immediate; /proc may lag a little
    while True:
        survivors = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if b"987." in cmdline.read_bytes() and b"sleep" in cmdline.read_bytes():
                    survivors.append(cmdline.read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not survivors


def test_broken_notebooks_still_get_graded(corpus):
    reports = corpus["reports"]
    not_json = reports["not_json.ipynb"]
    assert "not valid notebook JSON" in not_json["errors"][0] and not_json["exercises"] == []
    old = reports["old_nbformat.ipynb"]
    assert "old notebook (nbformat 3)" in old["errors"][0]
    syntax = reports["syntax_error_cell.ipynb"]
    assert syntax["errors"] == ["code cell 3 has a syntax error: '(' was never closed (line 3); "
                                "read from it anyway: project_onto_span"]
    for report in (old, syntax):
        statuses = {e["name"]: e["status"] for e in report["exercises"]}
        assert statuses["normalize_rows"] == statuses["cosine_similarity"] == "passed"
        assert statuses["nearest_neighbours"] == "missing"
    assert _exercises(syntax)["project_onto_span"]["status"] == "passed"  # beside the broken def


def test_order_duplicates_and_top_level_code_do_not_matter(corpus):
    report = corpus["reports"]["reordered.ipynb"]
    exercises = _exercises(report)
    assert report["errors"] == []  # magics are ignored; training loops, plots, data never run
    assert exercises["normalize_rows"]["status"] == "passed"  # the last definition wins
    assert exercises["cosine_similarity"]["status"] == "passed"  # its helper comes later
    message = exercises["nearest_neighbours"]["message"]
    assert "NameError: name 'SCALE' is not defined (grading runs only imports" in message


def test_same_submission_same_report(corpus):
    first, second = (dict(corpus["reports"][name]) for name in ("crashes.py", "again/crashes_again.py"))
    for report in (first, second):
        report.pop("duration_s"), report.pop("peak_memory_mb"), report.pop("submission")
    assert first["seed"] == 0
    assert json.dumps(first) == json.dumps(second).replace("crashes_again.py", "crashes.py")


def test_feedback_never_shows_check_code_or_expected_values(corpus):
    check_lines = {line.strip() for line in (ROOT / "tests" / f"test_{CHAPTER}.py").read_text().splitlines()
                   if len(line.strip()) > 25 and not line.strip().startswith(("#", '"', "@suite", "def "))}
    for report in corpus["reports"].values():
        text = json.dumps(report, ensure_ascii=False)
        assert "tensor(" not in text and "array(" not in text
        leaked = [line for line in check_lines if line in text]
        assert not leaked, leaked


# --------------------------------------------------------------------------- the threat list


def test_1_student_code_runs_without_privileges(corpus):
    """No root, no capabilities, no /etc/shadow, no grader environment, no other processes,
    no real-time priority, no immutable files; the grader cleans up and says so nowhere."""
    report = corpus["reports"]["privileges.py"]
    observed = _observed(report, "normalize_rows")
    assert observed == {"root": "False", "capabilities": "0000000000000000", "shadow": "PermissionError",
                        "passwd": "PermissionError", "secret": "False", "processes": "1",
                        "fifo": "PermissionError", "nice": "PermissionError", "immutable": "PermissionError"}
    assert ("dedicated user (not root)" if AS_ROOT else "user namespace") in " ".join(report["sandbox"])
    assert {"pid namespace", "private /proc", "no capabilities", "no_new_privs"} <= set(report["sandbox"])
    for path in corpus["out"].rglob("*"):
        assert not path.is_file() or SECRET not in path.read_text(errors="replace")


def test_2_limits_hold_for_the_submission_as_a_whole(corpus, measured):
    """Memory of all processes and in-memory files together, tasks, scratch, CPU share."""
    report = corpus["reports"]["limits.py"]
    exercises = _exercises(report)
    layer = "cgroup v1" if AS_ROOT else "watchdog"
    assert any(s.startswith(layer) for s in report["sandbox"]), report["sandbox"]
    memory = f"it used more than {MEMORY_MB} MB of memory (all its processes together)"
    if "RuntimeError: observed " in exercises["normalize_rows"]["message"]:  # six children of 400 MB
        children = _observed(report, "normalize_rows")  # a cgroup's OOM killer took some of them
        # (a child may finish its 400 MB before the killer takes it or another one, so how many
        # got that far says little; the whole tree's peak, asserted below, is the measurement)
        assert int(children["killed_by_the_limit"]) >= 1, children
    else:  # the watchdog stops the submission as a whole
        assert not AS_ROOT, exercises["normalize_rows"]  # as root, the cgroup holds it
        assert memory in exercises["normalize_rows"]["message"], exercises["normalize_rows"]
    for name in ("cosine_similarity", "project_onto_span"):  # 2400 MB of memfd; a 2000 MB shared mapping
        assert exercises[name]["status"] == "error" and memory in exercises[name]["message"], exercises[name]
    processes = int(_observed(report, "nearest_neighbours")["processes"])
    scratch_mb = int(_observed(report, "analogy_3cosadd")["scratch_mb"])
    cpu_share = float(_observed(report, "analogy_3cosmul")["cpu_share"])
    assert processes < Limits.tasks
    assert scratch_mb <= Limits.scratch_mb
    assert cpu_share <= Limits.cpus * 1.25
    assert report["peak_memory_mb"] <= MEMORY_MB * (1.0 if AS_ROOT else 1.25), report["peak_memory_mb"]
    measured(f"grader, limits ({layer}, memory {MEMORY_MB} MB): whole-tree peak {report['peak_memory_mb']} MB; "
             f"{processes} processes at once (cap {Limits.tasks}); scratch {scratch_mb} MB (cap {Limits.scratch_mb}); "
             f"CPU share {cpu_share:g} (cap {Limits.cpus})")


def test_3_students_cannot_read_each_other(corpus):
    """Started from the course folder, a submission cannot read another's file, the reports,
    or even list the folder."""
    observed = _observed(corpus["reports"]["peek.py"], "normalize_rows")
    assert set(observed) == {"other_submission", "reports", "course_folder"}
    assert set(observed.values()) <= {"denied", "absent"}, observed


def test_4_the_checks_never_enter_the_students_process(corpus):
    report = corpus["reports"]["leak.py"]
    assert _observed(report, "normalize_rows") == {"check_traces": "0"}


def test_5_training_is_judged_against_the_seeded_reference(tmp_path):
    """Weights written to look trained earn nothing; the helpers beside them are fine."""
    path = CORPUS / "fake_training.py"
    report = grade_one(Found(path, path.name), None, Policy(), Limits(memory_mb=MEMORY_MB), fork_server=True)
    exercises = _exercises(report)
    assert report["chapter"] == "superposition"
    training = exercises["train_toy_models"]
    assert training["checks"] == len(load_suite("superposition").cases_for("train_toy_models")), training
    assert training["score"] == training["checks_passed"] == 0, training
    for name in ("ToyModel", "generate_sparse_features", "importance_weighted_loss"):
        assert exercises[name]["status"] == "passed", exercises[name]


def test_5_an_in_place_mistake_cannot_hide_its_side_effect(corpus):
    """Normalising in place, then overwriting the caller's copy: the grader sees the change."""
    exercise = _exercises(corpus["reports"]["frame_hack.py"])["normalize_rows"]
    assert exercise["score"] == 0
    assert "normalize_rows changed its argument 'E' in place; compute on a copy instead" in exercise["message"]


def test_6_one_time_budget_and_a_cap_on_fresh_starts():
    """A hundred hanging definitions cost the submission's budget once, not a hundred
    timeouts; forty definitions that end the process cost ten fresh starts, not forty."""
    limits = Limits(timeout=3, setup_timeout=3, budget=8, memory_mb=MEMORY_MB)
    reports = {name: grade_one(Found(CORPUS / name, name), None, Policy(), limits, fork_server=True)
               for name in ("hanging_definitions.py", "exiting_definitions.py")}
    hanging = reports["hanging_definitions.py"]
    assert hanging["duration_s"] < limits.budget + 5
    *timeouts, last = hanging["errors"]
    assert 1 <= len(timeouts) <= limits.budget // limits.setup_timeout, hanging["errors"]
    assert all(e.endswith("skipped, because running it failed (it ran longer than 3 s (an infinite loop?))")
               for e in timeouts), timeouts
    assert last.endswith("skipped, because running it failed (the submission used up its 8 s)"), last
    assert all(e["status"] == "timeout" and "not graded: the submission used up its 8 s" in e["message"]
               for e in hanging["exercises"]), hanging
    exiting = reports["exiting_definitions.py"]
    assert len(exiting["errors"]) == limits.restarts + 1
    assert exiting["errors"][0] == "exiting_definitions.py (helper_0): skipped, because running it failed " \
                                   "(the process exited (exit code 1) instead of returning)"
    assert all(f"ended its process {limits.restarts} times" in e["message"] for e in exiting["exercises"])
    assert exiting["duration_s"] < 60


def test_7_batch_outputs_are_safe_and_say_whose_they_are(corpus):
    out, reports = corpus["out"], corpus["reports"]
    junit = ET.parse(out / "junit.xml").getroot()  # parses, whatever the students raised
    control = next(s for s in junit.findall("testsuite") if s.get("name") == "control_chars.py")
    assert "escape \ufffd[31m, nul \ufffd, bell \ufffd" in ET.tostring(control, encoding="unicode")
    rows = {r["submission"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert "'=cmd|calc!A1.py" in rows and float(rows["'=cmd|calc!A1.py"]["normalize_rows"]) == 3.0
    scores = {name: _exercises(reports[name])["normalize_rows"]["checks_passed"]
              for name in ("x/dup.py", "y/dup.py", "x__dup.py")}
    assert scores == {"x/dup.py": 3, "y/dup.py": 2, "x__dup.py": 0}
    assert {_report_file(out, name) for name in scores} == {"x%2Fdup.py.json", "y%2Fdup.py.json", "x__dup.py.json"}
    assert reports["linked.ipynb"]["errors"] == ["linked.ipynb is a symbolic link, which is not graded: submit "
                                                 "the notebook file itself"]
    assert reports["linked.ipynb"]["max_score"] == 0
    assert reports["int_source.ipynb"]["errors"] == ["code cell 1 has a source that is not text; it was skipped"]
    assert _exercises(reports["int_source.ipynb"])["cosine_similarity"]["status"] == "passed"
    assert "could not tell which chapter" in reports["null_worksheets.ipynb"]["errors"][1]
    assert reports["nested.ipynb"]["errors"][0] == "nested.ipynb is JSON nested too deeply to be a notebook; " \
                                                   "re-save it in Jupyter"


def _peak_growth_mb(grade) -> float:
    """How far this process's peak memory rises above where it stood while ``grade`` runs."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    before = int(status["VmRSS"].split()[0])
    grade()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(status["VmHWM"].split()[0]) - before) / 1024


def test_7_the_graders_own_memory_stays_bounded(tmp_path, measured):
    """A notebook with a 150 MB literal is refused unread; 40 MB results, where the reference's
    are a few kB, are refused by the student's process before they are sent."""
    literal = tmp_path / "literal.ipynb"
    literal.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "source": "DATA = '" + "x" * (150 << 20) + "'"}]}))
    large = tmp_path / "large_results.py"
    large.write_text("import torch\n\n\n" + "".join(
        f"def {name}(*args, **kwargs):\n    return torch.ones(10_000_000)\n\n\n" for name in EXERCISES))
    results = {}

    def grade(path):
        results[path.name] = grade_one(Found(path, path.name), CHAPTER, Policy(), Limits(memory_mb=MEMORY_MB), True)

    grade(large)  # once first: the fork server and the expected values are not the submission's
    growth = {path.name: _peak_growth_mb(lambda: grade(path)) for path in (literal, large)}
    assert "150 MB, more than the 50 MB a submission may be" in results["literal.ipynb"]["errors"][0]
    assert all("the result holds 38.1 MB of data, far more than this check expects" in e["message"]
               for e in results["large_results.py"]["exercises"]), results["large_results.py"]
    assert growth["literal.ipynb"] < 20 and growth["large_results.py"] < 200, growth
    measured(f"grader's own peak memory growth: a 150 MB literal {growth['literal.ipynb']:.1f} MB, "
             f"40 MB results {growth['large_results.py']:.1f} MB")


def test_8_a_grader_that_cannot_grade_stops_with_a_clear_error(tmp_path, capsys):
    """The canary: the reference, graded first in the sandbox, fails (here: limits too tight
    to run it), so nothing is graded and the exit status says so. The corpus itself ran
    from a course folder whose editable install points elsewhere, and graded."""
    status = main([str(CORPUS / "x__dup.py"), "--out", str(tmp_path / "reports"), "--timeout", "0.001", "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "the reference solution 1_embedding_arithmetic_solved.ipynb does not get full marks in the " \
           "sandbox on this machine" in err and "Nothing was graded" in err
    assert not (tmp_path / "reports").exists()


def test_9_printing_does_not_fail_an_exercise(corpus):
    exercise = _exercises(corpus["reports"]["prints.py"])["normalize_rows"]
    assert exercise["status"] == "passed", exercise
