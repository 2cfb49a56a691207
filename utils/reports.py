"""The course's tools on top of the grader: run it, and read what it reports.

Progress (``utils.progress``) and feedback (``utils.feedback``) never check anything
themselves: they run the grader's command line (``python -m utils.grade``) and read the JSON
reports it writes. Both go through this module only, and the report's format is read in one
place, ``read_report``: a change of the grader's format is fixed there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from utils.grading.reports import file_name

GRADER = [sys.executable, "-m", "utils.grade"]  # the command line the README documents
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Exercise:
    """One exercise as graded: ``status`` is the grader's (passed, failed, error, timeout, missing)."""

    name: str
    status: str
    score: float
    max_score: float
    message: str  # the failing checks and the likely mistake, as the grader words them

    @property
    def still_the_stub(self) -> bool:
        """Whether the grader found the exercise still the stub it was handed out as.

        Read from the grader's words; should they change, such an exercise merely shows as
        an error like any other, which is still correct.
        """
        return self.status == "error" and "still the stub" in self.message


@dataclass
class Report:
    """One submission's grade."""

    learner: str  # the submission's path in the class folder without .ipynb/.py: "alice", "group1/bob"
    chapter: str | None
    score: float
    max_score: float
    exercises: list[Exercise] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why (part of) the file could not be graded
    submission: str = ""  # the file's path in the class folder, as the grader names it


def learner_name(submission: str) -> str:
    """The learner a submission is for: its path in the class folder without ``.ipynb``/``.py``."""
    return re.sub(r"\.(ipynb|py)$", "", submission)


def report_file(folder: Path, submission: str) -> Path:
    """Where the grader writes the report of ``submission`` (its path below the graded folder)."""
    return Path(folder) / f"{file_name(submission)}.json"


def page_name(learner: str) -> str:
    """A file name for something written per learner (a feedback page): distinct per learner."""
    return file_name(learner)


def read_report(path: Path) -> Report | None:
    """The grade in one of the grader's JSON files, or None if the file is not a report.

    The only function that knows the grader's report format.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not {"submission", "score", "max_score", "exercises"} <= data.keys():
        return None
    exercises = [Exercise(e["name"], e["status"], float(e["score"]), float(e["max_score"]),
                          e.get("message", "")) for e in data["exercises"]]
    submission = str(data["submission"])
    return Report(learner_name(submission), data.get("chapter"), float(data["score"]),
                  float(data["max_score"]), exercises, list(data.get("errors", [])), submission)


def read_reports(folder: Path) -> dict[str, Report]:
    """Every report the grader wrote in ``folder``, by learner, in learner order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of reports")
    found = [report for report in map(read_report, folder.glob("*.json")) if report is not None]
    names = Counter(report.learner for report in found)
    for report in found:  # alice.py beside alice.ipynb: each keeps its whole file name
        if names[report.learner] > 1:
            report.learner = report.submission
    return {report.learner: report for report in sorted(found, key=lambda r: r.learner)}


def run_grader(submissions: list[Path], out: Path, *options: str) -> subprocess.CompletedProcess:
    """Run the grader's command line on ``submissions``, reports into ``out``.

    ``options`` are the grader's own (``--chapter``, ``--timeout``, ``--format``...). Its output
    is captured; the caller decides what to show. Run from the repository root, so the
    course's ``utils`` is the one imported whatever the caller's working directory.
    """
    command = [*GRADER, *map(str, submissions), "--out", str(out), *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
