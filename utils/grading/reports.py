"""Reports: one JSON per submission, and a batch's gradebook, JUnit XML and Gradescope files.

A report says, per exercise, its status (``passed | failed | error | timeout | missing``),
points and feedback (the failing check and the likely mistake, never the check's code or
expected values), plus the submission's reading problems, seed and sandbox layers.

Everything a student's code can influence (messages, file names) is made safe for every
format: control characters go, XML gets only characters XML 1.0 allows, a CSV cell never
starts like a spreadsheet formula. A report's file name is its submission's path relative
to the folder it was found in, escaped so that different paths never share a name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from utils.checks import load_suite
from utils.grading.runner import SubmissionRun, expected_outcomes

STATUSES = ("passed", "failed", "error", "timeout", "missing")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]")


def clean(text: str) -> str:
    """``text`` without control characters (newlines and tabs stay) or lone surrogates."""
    text = _CONTROL.sub("\ufffd", str(text))
    return text.encode("utf-8", "replace").decode("utf-8")


def file_name(relative: str) -> str:
    """A report's file name for a submission's relative path: readable, and distinct for
    distinct paths (every character but letters, digits, ``_ . -`` is %-escaped, and a
    leading dot too); very long names end in a hash of the full path."""
    escaped = "".join(c if _SAFE_NAME.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode())
                      for c in relative)
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    if len(escaped) > 180:
        escaped = escaped[:150] + "~" + hashlib.sha256(relative.encode()).hexdigest()[:24]
    return escaped


@dataclass
class Policy:
    """How points are given: per-exercise points, and whether partial credit exists."""

    points: dict[str, float] = field(default_factory=dict)  # overrides the chapter's
    all_or_nothing: bool = False
    seed: int = 0


def _score(points: float, passed: int, total: int, all_or_nothing: bool) -> float:
    if all_or_nothing:
        return points if passed == total else 0.0
    return round(points * passed / total, 6)


def grade_exercise(suite, name: str, run, points: float, policy: Policy) -> dict:
    """One exercise's report entry from its sandboxed run."""
    cases = suite.cases_for(name)
    entry = {"name": name, "status": "missing", "score": 0.0, "max_score": float(points), "message": "",
             "checks_passed": 0, "checks": len(cases)}
    if run.status == "missing":
        entry["message"] = f"{run.message}; define it with exactly this name"
        return entry
    expected = expected_outcomes(suite.chapter, policy.seed)
    passed, raised, lines, previous = 0, False, [], None
    for case in cases:
        if expected[case.id].error is not None:
            lines.append(f"✗ {case.name}: internal error in the checks (not your fault); tell your instructor")
            continue
        verdict = run.verdicts.get(case.id)
        if verdict is None:  # the process stopped on this case (or before it)
            stopped = any(line.startswith("✗") and "stopped here" in line for line in lines)
            lines.append(f"✗ {case.name}: " + ("not run" if stopped else
                                                f"stopped here ({run.message or 'the process ended'})"))
            continue
        if verdict.passed:
            passed += 1
        else:
            raised |= verdict.raised
            repeated = verdict.raised and verdict.message == previous
            lines.append(f"✗ {case.name}: " + ("the same error" if repeated else verdict.message))
            previous = verdict.message
    entry["score"] = _score(points, passed, len(cases), policy.all_or_nothing)
    entry["checks_passed"] = passed
    if run.status == "timeout":
        entry["status"] = "timeout"
    elif passed == len(cases):
        entry["status"] = "passed"
    else:
        entry["status"] = "error" if raised or run.status == "crashed" else "failed"
    summary = f"{passed} of {len(cases)} checks passed"
    if run.status in ("timeout", "crashed"):
        summary += f"; stopped because {run.message}"
    entry["message"] = clean("\n".join([summary + ".", *lines]) if lines or run.status != "ran" else
                             "the check passed" if len(cases) == 1 else f"all {len(cases)} checks passed")
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


def report(name: str, chapter: str | None, errors: list[str], run: SubmissionRun | None, policy: Policy,
           skipped: set[str] = frozenset(), seconds: float = 0.0) -> dict:
    """The report of one submission (``name``: its path relative to the folder it came from)."""
    result = {"submission": clean(name), "chapter": chapter, "score": 0.0, "max_score": 0.0, "exercises": [],
              "errors": [clean(e) for e in errors], "seed": policy.seed,
              "sandbox": run.isolation if run else []}
    if run is not None:
        suite = load_suite(chapter)
        for exercise in suite.exercises:
            points = float(policy.points.get(exercise, suite.points.get(exercise, 1.0)))
            entry = grade_exercise(suite, exercise, run.exercises[exercise], points, policy)
            entry["message"] = _with_hint(entry["message"], skipped)
            result["exercises"].append(entry)
        result["score"] = round(sum(e["score"] for e in result["exercises"]), 6)
        result["max_score"] = sum(e["max_score"] for e in result["exercises"])
    result["duration_s"] = round(seconds, 2)  # measurements: they differ from run to run
    result["peak_memory_mb"] = round(run.peak_memory_mb, 1) if run and run.peak_memory_mb is not None else None
    return result


# --------------------------------------------------------------------------- writing


def write_atomically(path: Path, text: str) -> None:
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


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def junit_xml(reports: list[dict]) -> str:
    """One JUnit XML: a test suite per submission, a test case per exercise."""
    root = ET.Element("testsuites", name="grading")
    for report in reports:
        exercises, name = report["exercises"], _xml(report["submission"])
        suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(exercises)),
                              failures=str(sum(e["status"] in ("failed", "missing") for e in exercises)),
                              errors=str(sum(e["status"] in ("error", "timeout") for e in exercises)))
        if report["errors"]:
            ET.SubElement(suite, "system-err").text = _xml("\n".join(report["errors"]))
        for e in exercises:
            case = ET.SubElement(suite, "testcase", classname=f"{name}.{report['chapter']}", name=e["name"])
            if e["status"] in ("failed", "missing"):
                ET.SubElement(case, "failure", message=e["status"]).text = _xml(e["message"])
            elif e["status"] in ("error", "timeout"):
                ET.SubElement(case, "error", message=e["status"]).text = _xml(e["message"])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cell(value) -> str | float:
    """A CSV cell a spreadsheet shows as text: no formula, whatever the text starts with."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def gradebook_csv(reports: list[dict]) -> str:
    """One row per submission: total, then each exercise's score."""
    exercises = list(dict.fromkeys(e["name"] for r in reports for e in r["exercises"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["submission", "chapter", "score", "max_score", *exercises])
    for report in reports:
        scores = {e["name"]: e["score"] for e in report["exercises"]}
        writer.writerow([_cell(report["submission"]), report["chapter"] or "", report["score"],
                         report["max_score"], *[scores.get(name, "") for name in exercises]])
    return out.getvalue()


def write_report(report: dict, out: Path, formats: list[str]) -> None:
    """A submission's own files: its JSON report, and its Gradescope results if asked for."""
    name = file_name(report["submission"])
    write_atomically(out / f"{name}.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if "gradescope" in formats:
        write_atomically(out / "gradescope" / name / "results.json",
                         json.dumps(gradescope_results(report), indent=2, ensure_ascii=False) + "\n")


def write_batch(reports: list[dict], out: Path, formats: list[str]) -> None:
    """Every file of a batch, reports in the order given (by submission name)."""
    for report in reports:
        write_report(report, out, formats)
    if "csv" in formats:
        write_atomically(out / "gradebook.csv", gradebook_csv(reports))
    if "junit" in formats:
        write_atomically(out / "junit.xml", junit_xml(reports))
