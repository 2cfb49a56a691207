"""A feedback page per learner from the grader's reports: ``python -m utils.feedback``.

    python -m utils.feedback REPORTS --out FEEDBACK

reads the JSON reports ``python -m utils.grade ... --out REPORTS`` wrote and writes
``FEEDBACK/<learner>.md`` for each (``group1%2Fbob.md`` for ``group1/bob.ipynb``): the score, then every exercise with its points and, for
one not passed, what the grader says failed and the likely mistake. Only the grader's own
words are used, and the grader never reports the hidden checks' code, inputs or expected
values, so neither does a page. ``FEEDBACK/index.md`` lists every learner's score.

Exit status 0 when every report got a page, 2 on bad usage (no such folder, no reports).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from utils.reports import Report, page_name, read_reports

# How the grader's statuses read to a learner.
STATUS_WORDS = {"passed": "passed", "failed": "failed", "error": "raised an error",
                "timeout": "ran out of time", "missing": "not found in your notebook"}
MAX_MESSAGE = 4000  # characters of one exercise's feedback; a submission can print a lot


def _points(value: float) -> str:
    return f"{value:g}"


def _fenced(text: str) -> str:
    """``text`` in a code block, verbatim: a fence longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _shortened(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return text[:MAX_MESSAGE] + f"\n... ({len(text) - MAX_MESSAGE} more characters left out)"


def page(report: Report) -> str:
    """One learner's feedback, as markdown."""
    chapter = report.chapter or "unknown chapter"
    lines = [f"# Feedback for {report.learner}", "",
             f"Chapter: `{chapter}`. Score: **{_points(report.score)} / {_points(report.max_score)}**.", ""]
    if report.errors:  # a file that could not be read, a cell that does not parse, ...
        lines += ["## Problems with the submission", "", *[f"- {error}" for error in report.errors], ""]
    if not report.exercises or (report.errors and all(e.status == "missing" for e in report.exercises)):
        lines += ["No exercise could be read from the submission, so the score is 0. Fix the "
                  "problems above and submit again.", ""]
        return "\n".join(lines)
    lines += ["| exercise | points | result |", "|---|---|---|"]
    lines += [f"| `{e.name}` | {_points(e.score)} / {_points(e.max_score)} | "
              f"{'not started' if e.still_the_stub else STATUS_WORDS.get(e.status, e.status)} |"
              for e in report.exercises]
    lines.append("")
    to_fix = [e for e in report.exercises if e.status != "passed" and not e.still_the_stub]
    if to_fix:
        lines += ["## What to fix", "", "Under each exercise, a line marked ✗ names a check that failed "
                  "and the mistake that most likely causes it.", ""]
    for e in to_fix:
        lines += [f"### `{e.name}`: {STATUS_WORDS.get(e.status, e.status)} "
                  f"({_points(e.score)} / {_points(e.max_score)})", "", _fenced(_shortened(e.message)), ""]
    stubs = [f"`{e.name}`" for e in report.exercises if e.still_the_stub]
    if stubs:
        lines += ["## Not started", "", f"Still the stub handed out: {', '.join(stubs)}.", ""]
    if all(e.status == "passed" for e in report.exercises):
        lines += ["Every exercise passed. Well done.", ""]
    return "\n".join(lines)


def index(reports: dict[str, Report]) -> str:
    """The class at a glance: a row per learner, linking to their page."""
    lines = ["# Feedback", "", "| learner | chapter | score | passed |", "|---|---|---|---|"]
    for learner, r in reports.items():
        passed = sum(e.status == "passed" for e in r.exercises)
        lines.append(f"| [{learner}]({page_name(learner)}.md) | {r.chapter or '?'} | "
                     f"{_points(r.score)} / {_points(r.max_score)} | {passed} of {len(r.exercises)} |")
    return "\n".join(lines) + "\n"


def write_feedback(reports_folder: Path, out: Path) -> dict[str, Path]:
    """Write every learner's page and the index; the pages, by learner."""
    reports = read_reports(reports_folder)
    if not reports:
        raise ValueError(f"{reports_folder}: no grader reports (<submission>.json) in it; "
                         "run python -m utils.grade SUBMISSIONS --out FOLDER first")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for learner, report in reports.items():
        written[learner] = out / f"{page_name(learner)}.md"
        written[learner].write_text(page(report), encoding="utf-8")
    (out / "index.md").write_text(index(reports), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.feedback", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, metavar="REPORTS", help="the folder the grader wrote its reports in")
    parser.add_argument("--out", type=Path, required=True, metavar="FEEDBACK", help="where the pages go")
    args = parser.parse_args(argv)
    try:
        written = write_feedback(args.reports, args.out)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"{len(written)} feedback pages in {args.out} (index: {args.out / 'index.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
