"""Grade students' notebooks against the hidden checks: ``python -m utils.grade``.

    python -m utils.grade SUBMISSION [SUBMISSION ...] --out DIR [--chapter NAME] [--jobs N]
        [--timeout SECONDS] [--memory MB] [--format json,gradescope,junit,csv]
        [--seed N] [--points NAME=P,...] [--all-or-nothing]

A SUBMISSION is a ``.ipynb`` or ``.py`` file, or a directory of them. For each one the
grader writes ``DIR/<stem>.json``; with ``csv`` a ``DIR/gradebook.csv``; with
``gradescope`` a ``DIR/gradescope/<stem>/results.json``; with ``junit`` one
``DIR/junit.xml``. Exit status 0 when every submission got a report, 1 when the grader
itself failed on one, 2 on bad usage.

How a submission is graded: its definitions are read from the code cells
(``utils.submission``), run in a sandboxed process (``utils.sandbox``), and each check
case's plain result is compared here, in the grader's process, with the reference's result
on the same case and seed. An exercise's points (1 unless the chapter's ``Suite.points`` or
``--points`` say otherwise) are split evenly over its cases, or with ``--all-or-nothing``
given only when every case passes. Feedback names the failing case and the likely mistake,
never the check's code or the expected values.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from utils.checks import CHAPTERS, Outcome, judge_case, load_suite, run_case
from utils.sandbox import Limits, SubmissionRun, run_submission
from utils.submission import Submission, infer_chapter, read_submission

FORMATS = ("json", "gradescope", "junit", "csv")
STATUSES = ("passed", "failed", "error", "timeout", "missing")


@dataclass
class Policy:
    """How points are given: per-exercise points, and whether partial credit exists."""

    points: dict[str, float] = field(default_factory=dict)  # overrides the chapter's
    all_or_nothing: bool = False
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    fork_server: bool = True  # for batches: see ``utils.sandbox.run_submission``


# --------------------------------------------------------------------------- expected values

_expected: dict[tuple[str, int], dict[str, Outcome]] = {}
_expected_lock = threading.Lock()


def expected_outcomes(chapter: str, seed: int) -> dict[str, Outcome]:
    """The reference's outcome on every case, computed once per chapter and seed."""
    with _expected_lock:
        if (chapter, seed) not in _expected:
            suite = load_suite(chapter)
            reference = suite.reference()
            _expected[chapter, seed] = {c.id: run_case(c, reference, seed) for c in suite.cases}
        return _expected[chapter, seed]


# --------------------------------------------------------------------------- one submission


def _score(points: float, passed: int, total: int, all_or_nothing: bool) -> float:
    if all_or_nothing:
        return points if passed == total else 0.0
    return round(points * passed / total, 6)


def grade_exercise(suite, name: str, run, expected: dict[str, Outcome], points: float,
                   all_or_nothing: bool) -> dict:
    """One exercise's report entry from its sandboxed run."""
    entry = {"name": name, "status": "missing", "score": 0.0, "max_score": float(points), "message": "",
             "checks_passed": 0, "checks": len(suite.cases_for(name))}
    if run.status == "missing":
        entry["message"] = f"{run.message}; define it with exactly this name"
        return entry
    cases = suite.cases_for(name)
    passed, raised, lines, previous = 0, False, [], None
    for case in cases:
        if expected[case.id].error is not None:
            print(f"grader: the reference fails {case.id}: {expected[case.id].error}", file=sys.stderr)
            lines.append(f"✗ {case.name}: internal error in the checks (not your fault); "
                         "tell your instructor")
            continue
        actual = run.outcomes.get(case.id)
        if actual is None:  # the process stopped on this case (or before it)
            stopped = any(line.startswith("✗") and "stopped here" in line for line in lines)
            lines.append(f"✗ {case.name}: " + ("not run" if stopped else
                                                f"stopped here ({run.message or 'the process ended'})"))
            continue
        verdict = judge_case(case, expected[case.id], actual)
        if verdict.passed:
            passed += 1
        else:
            raised |= actual.error is not None
            repeated = actual.error is not None and verdict.message == previous
            lines.append(f"✗ {case.name}: " + ("the same error" if repeated else verdict.message))
            previous = verdict.message
    entry["score"] = _score(points, passed, len(cases), all_or_nothing)
    entry["checks_passed"], entry["checks"] = passed, len(cases)
    if run.status == "timeout":
        entry["status"] = "timeout"
    elif passed == len(cases):
        entry["status"] = "passed"
    else:
        entry["status"] = "error" if raised or run.status == "crashed" else "failed"
    summary = f"{passed} of {len(cases)} checks passed"
    if run.status in ("timeout", "crashed"):
        summary += f"; stopped because {run.message}"
    entry["message"] = "\n".join([summary + ".", *lines]) if lines or run.status != "ran" else \
        "the check passed" if len(cases) == 1 else f"all {len(cases)} checks passed"
    return entry


def _with_hint(message: str, skipped: set[str]) -> str:
    """Explain a NameError for a global that top-level code (never run) would assign."""
    for name in sorted(skipped):
        if f"NameError: name '{name}' is not defined" in message:
            return message.replace(
                f"NameError: name '{name}' is not defined",
                f"NameError: name '{name}' is not defined (grading runs only imports, definitions "
                f"and constant assignments, not the cell that computes {name}; compute it inside "
                "the function or pass it as an argument)", 1)
    return message


@dataclass
class Attempt:
    """A submission after its run in the sandbox, before any points are given."""

    path: Path
    chapter: str | None
    errors: list[str]
    submission: Submission | None = None
    run: SubmissionRun | None = None
    seconds: float = 0.0


def attempt(path: Path, chapter: str | None, policy: Policy) -> Attempt:
    """Read the submission, infer its chapter, and run its exercises in the sandbox."""
    started = time.monotonic()
    try:
        submission = read_submission(path)
    except (OSError, ValueError) as exc:
        return Attempt(path, chapter, [f"the submission could not be read: {exc}"])
    chapter = chapter or infer_chapter(submission)
    if chapter is None:
        return Attempt(path, None, submission.errors + [
            "could not tell which chapter this submission is for (no exercise of any chapter is "
            "defined in it); grade it with --chapter NAME"], submission)
    expected_outcomes(chapter, policy.seed)  # fail early, in the grader, if the reference does
    run = run_submission(submission, chapter, seed=policy.seed, limits=policy.limits,
                         fork_server=policy.fork_server)
    return Attempt(path, chapter, submission.errors + run.errors, submission, run,
                   time.monotonic() - started)


def report(done: Attempt, policy: Policy) -> dict:
    """The report of one attempt under ``policy`` (see the module docstring for its fields)."""
    result = {"submission": done.path.name, "chapter": done.chapter, "score": 0.0, "max_score": 0.0,
              "exercises": [], "errors": list(done.errors), "seed": policy.seed,
              "sandbox": done.run.isolation if done.run else []}
    if done.run is None:
        return result
    suite = load_suite(done.chapter)
    expected = expected_outcomes(done.chapter, policy.seed)
    skipped = done.submission.skipped_names()
    for name in suite.exercises:
        points = float(policy.points.get(name, suite.points.get(name, 1.0)))
        entry = grade_exercise(suite, name, done.run.exercises[name], expected, points,
                               policy.all_or_nothing)
        entry["message"] = _with_hint(entry["message"], skipped)
        result["exercises"].append(entry)
    result["score"] = round(sum(e["score"] for e in result["exercises"]), 6)
    result["max_score"] = sum(e["max_score"] for e in result["exercises"])
    result["duration_s"] = round(done.seconds, 2)
    return result


def grade_submission(path: Path, chapter: str | None, policy: Policy) -> dict:
    """Run one submission and give it points: its report."""
    return report(attempt(path, chapter, policy), policy)


# --------------------------------------------------------------------------- writing reports


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` (never follow a link or file someone planted there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".grading-")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(temporary, path)


def gradescope_results(report: dict) -> dict:
    """Gradescope's autograder ``results.json``: one test per exercise."""
    tests = [{"name": e["name"], "score": e["score"], "max_score": e["max_score"],
              "status": "passed" if e["status"] == "passed" else "failed",
              "output": e["message"], "visibility": "visible"} for e in report["exercises"]]
    return {"score": report["score"], "tests": tests, "output": "\n".join(report["errors"]),
            "visibility": "visible"}


def junit_xml(reports: dict[str, dict]) -> str:
    """One JUnit XML: a test suite per submission, a test case per exercise."""
    root = ET.Element("testsuites", name="grading")
    for stem, report in reports.items():
        exercises = report["exercises"]
        suite = ET.SubElement(root, "testsuite", name=stem, tests=str(len(exercises)),
                              failures=str(sum(e["status"] in ("failed", "missing") for e in exercises)),
                              errors=str(sum(e["status"] in ("error", "timeout") for e in exercises)))
        if report["errors"]:
            ET.SubElement(suite, "system-err").text = "\n".join(report["errors"])
        for e in exercises:
            case = ET.SubElement(suite, "testcase", classname=f"{stem}.{report['chapter']}", name=e["name"])
            if e["status"] in ("failed", "missing"):
                ET.SubElement(case, "failure", message=e["status"]).text = e["message"]
            elif e["status"] in ("error", "timeout"):
                ET.SubElement(case, "error", message=e["status"]).text = e["message"]
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def gradebook_csv(reports: dict[str, dict]) -> str:
    """One row per submission: total, then each exercise's score."""
    exercises = list(dict.fromkeys(e["name"] for r in reports.values() for e in r["exercises"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["submission", "chapter", "score", "max_score", *exercises])
    for stem, report in reports.items():
        scores = {e["name"]: e["score"] for e in report["exercises"]}
        writer.writerow([stem, report["chapter"] or "", report["score"], report["max_score"],
                         *[scores.get(name, "") for name in exercises]])
    return out.getvalue()


def write_reports(reports: dict[str, dict], out: Path, formats: list[str]) -> None:
    for stem, report in reports.items():
        if "json" in formats:
            _write_atomically(out / f"{stem}.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        if "gradescope" in formats:
            _write_atomically(out / "gradescope" / stem / "results.json",
                              json.dumps(gradescope_results(report), indent=2, ensure_ascii=False) + "\n")
    if "csv" in formats:
        _write_atomically(out / "gradebook.csv", gradebook_csv(reports))
    if "junit" in formats:
        _write_atomically(out / "junit.xml", junit_xml(reports))


# --------------------------------------------------------------------------- a batch


def collect(paths: list[str]) -> list[Path]:
    """The submission files: given files, and the notebooks and .py files in given folders."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            found += sorted(p for p in given.iterdir() if p.suffix in (".ipynb", ".py")
                            and p.is_file() and not p.name.startswith("."))
        elif given.is_file():
            if given.suffix not in (".ipynb", ".py"):
                raise ValueError(f"{given}: a submission is a notebook (.ipynb) or a Python file (.py)")
            found.append(given)
        else:
            raise ValueError(f"{given}: no such file or directory")
    return list(dict.fromkeys(p.resolve() for p in found))


def report_names(paths: list[Path]) -> dict[Path, str]:
    """A unique report stem per submission: the file's stem, with its folder if stems clash."""
    names = {}
    for path in paths:
        stem = path.stem
        if sum(p.stem == stem for p in paths) > 1:
            stem = f"{path.parent.name}__{stem}"
        while stem in names.values():
            stem += "_"
        names[path] = stem
    return names


def grade_batch(paths: list[Path], out: Path, chapter: str | None = None, jobs: int = 1,
                policy: Policy | None = None, formats=("json", "csv"), progress: bool = True) -> dict[str, dict]:
    """Grade every submission (``jobs`` at a time) and write the reports; returns them."""
    policy = policy or Policy()
    names = report_names(paths)
    reports: dict[str, dict] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), unit="submission", desc="grading", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_submission, path, chapter, policy): path for path in paths}
        for future in as_completed(futures):
            path = futures[future]
            try:
                report = future.result()
            except Exception:  # noqa: BLE001 - the grader's own bug: still a report, exit 1
                print(f"grader: internal error on {path}:\n{traceback.format_exc()}", file=sys.stderr)
                report = {"submission": path.name, "chapter": chapter, "score": 0.0, "max_score": 0.0,
                          "exercises": [], "errors": ["internal error in the grader; tell your instructor"],
                          "seed": policy.seed, "sandbox": [], "internal_error": True}
            reports[names[path]] = report
            write_reports({names[path]: report}, out, [f for f in formats if f in ("json", "gradescope")])
            bar.set_postfix_str(f"{path.name}: {report['score']:g}/{report['max_score']:g}")
            bar.update()
    bar.close()
    ordered = {names[p]: reports[names[p]] for p in paths}
    # written again once every student's process is gone: nothing a submission wrote survives
    write_reports(ordered, out, list(formats))
    return ordered


def _points(text: str) -> dict[str, float]:
    points = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        try:
            points[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--points takes NAME=POINTS,..., not {item!r}") from None
    return points


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {unknown}; choose from {','.join(FORMATS)}")
    return formats


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                        help="a notebook (.ipynb) or Python file (.py), or a directory of them")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where reports go")
    parser.add_argument("--chapter", choices=CHAPTERS, help="inferred from each submission if omitted")
    parser.add_argument("--jobs", type=_positive(int), default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=_positive(float), default=Limits.timeout,
                        help="seconds per exercise (default %(default)s)")
    parser.add_argument("--memory", type=_positive(int), default=Limits.memory_mb,
                        help="MB of address space for the student's process (default %(default)s)")
    parser.add_argument("--format", type=_formats, default=["json", "csv"], dest="formats",
                        help="comma-separated, of json,gradescope,junit,csv (default json,csv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every check case (default 0)")
    parser.add_argument("--points", type=_points, default={}, metavar="NAME=P,...",
                        help="points of exercises (default: the chapter's, else 1 each)")
    parser.add_argument("--all-or-nothing", action="store_true",
                        help="an exercise scores its points only when every check passes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        paths = collect(args.submissions)
        if args.chapter:
            load_suite(args.chapter)
    except ValueError as exc:
        parser.error(str(exc))
    except ModuleNotFoundError:
        parser.error(f"chapter {args.chapter!r} has no hidden checks yet (tests/test_{args.chapter}.py)")
    if not paths:
        parser.error("no .ipynb or .py files in the given folders")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a directory")
    limits = Limits(timeout=args.timeout, memory_mb=args.memory, setup_timeout=max(60.0, args.timeout))
    policy = Policy(points=args.points, all_or_nothing=args.all_or_nothing, seed=args.seed, limits=limits,
                    fork_server=len(paths) > 1)
    reports = grade_batch(paths, args.out, args.chapter, args.jobs, policy, args.formats,
                          progress=not args.quiet and len(paths) > 1)
    for stem, report in reports.items():
        print(f"{stem}: {report['score']:g} / {report['max_score']:g}")
    return 1 if any(r.get("internal_error") for r in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
