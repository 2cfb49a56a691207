"""Where a self-studier stands: ``python -m utils.progress`` (what ``make progress`` runs).

For each chapter notebook in the learner's ``workspace/`` it prints which exercises pass,
which fail (with the grader's first line of feedback) and which are untouched. Nothing here
checks anything: the notebooks are graded by the course's grader (``utils.reports``).

*Untouched* means the definition the grader would take for the exercise (the last one in
the notebook's code cells) is still the stub of the chapter's template in ``chapters/``,
verbatim: work not started, shown as such and never as a failure. A notebook whose
exercises are all untouched is not graded at all, which keeps a fresh workspace instant;
one with any exercise started is graded whole, by one run of the grader.

    python -m utils.progress [--workspace DIR] [--timeout SECONDS]

Exit status 0 whatever the learner's results (this is a report, not a test); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from utils import notebooks
from utils.lab import TEMPLATES, WORKSPACE
from utils.reports import Report, read_report, report_file, run_grader
from utils.grading.submission import read_submission

MARKS = {"pass": "✓", "fail": "✗", "untouched": "·"}


@dataclass
class Chapter:
    """A chapter's names: its notebook's stem and the grader's name for it (the solutions module)."""

    stem: str
    module: str

    @property
    def title(self) -> str:
        number, _, words = self.stem.partition("_")
        return f"{number}. {words.replace('_', ' ')}"


def chapters() -> list[Chapter]:
    """Every chapter, in course order."""
    found = []
    for source in notebooks.chapter_sources():
        module, _ = notebooks.parse(source.read_text(encoding="utf-8"), source.name)
        found.append(Chapter(source.stem, module))
    return found


def template_stubs(template: Path) -> dict[str, str]:
    """Each exercise's stub in a generated template notebook, by exercise name."""
    cells = json.loads(template.read_text(encoding="utf-8"))["cells"]
    return {c["metadata"]["exercise"]: "".join(c["source"]).strip() for c in cells
            if c["cell_type"] == "code" and "exercise" in c.get("metadata", {})}


def untouched(notebook: Path, stubs: dict[str, str]) -> set[str]:
    """The exercises whose last definition in ``notebook`` is still the template's stub.

    The notebook is read as the grader reads it (``utils.grading.submission``), so "last definition"
    means what it means when grading. A notebook that cannot be read has none untouched: the
    grader will say what is wrong with it.
    """
    try:
        submission = read_submission(notebook)
    except (OSError, ValueError):
        return set()
    last = {}
    for statement in submission.statements:
        for name in statement.defines:
            last[name] = statement.code.strip()
    return {name for name, stub in stubs.items() if last.get(name) == stub}


@contextmanager
def waiting(what: str, after: float = 2.0):
    """Say what we are waiting for, with the seconds so far, once it takes more than ``after``."""
    done = threading.Event()
    started = time.monotonic()
    tty = sys.stderr.isatty()

    def tick() -> None:
        if done.wait(after):
            return
        while True:  # a terminal gets a live counter; a log gets one line
            elapsed = time.monotonic() - started
            print(f"\r{what}... {elapsed:.0f} s" if tty else f"{what}...", end="" if tty else "\n",
                  file=sys.stderr, flush=True)
            if not tty or done.wait(1.0):
                return

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        if tty and time.monotonic() - started > after:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the counter's line


def grade(notebook: Path, chapter: Chapter, timeout: float) -> tuple[Report | None, str]:
    """The grader's report on one notebook, or None and the grader's last words if it wrote none."""
    with tempfile.TemporaryDirectory(prefix="progress-") as out:
        with waiting(f"grading {notebook.name}"):
            done = run_grader([notebook], Path(out), "--chapter", chapter.module, "--format", "json",
                              "--timeout", str(timeout), "--quiet")
        report = read_report(report_file(out, notebook.name))
    said = [line for line in done.stderr.splitlines() if line.strip()]
    return report, (said[-1] if said else f"exit status {done.returncode}")


def first_failure(message: str) -> str:
    """The grader's feedback in one line: its first failing check, or its summary."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    failing = [line.removeprefix("✗").strip() for line in lines if line.startswith("✗")]
    return (failing or lines or [""])[0]


def chapter_progress(notebook: Path, chapter: Chapter, timeout: float) -> list[str]:
    """The lines printed for one chapter."""
    stubs = template_stubs(TEMPLATES / f"{chapter.stem}.ipynb")
    not_started = untouched(notebook, stubs)
    heading = f"{chapter.title} ({notebook.name})"
    if not_started == set(stubs):  # nothing to grade
        return [f"{heading}: not started ({len(stubs)} exercises)"]
    report, grader_said = grade(notebook, chapter, timeout)
    if report is None:
        return [f"{heading}: not graded: the grader failed ({grader_said})"]
    if report.errors and all(e.status == "missing" for e in report.exercises):  # nothing could be read
        return [f"{heading}: could not be read", *[f"  ! {error}" for error in report.errors]]
    graded = {e.name: e for e in report.exercises}
    width = max(60, shutil.get_terminal_size().columns)
    rows, counts = [], {kind: 0 for kind in MARKS}
    for name in stubs:  # the template's order: the order the learner meets them
        exercise = graded.get(name)
        if name in not_started or (exercise and exercise.still_the_stub):  # (a template since changed)
            kind, note = "untouched", ""
        elif exercise is None:
            kind, note = "fail", "not graded"
        elif exercise.status == "passed":
            kind, note = "pass", ""
        else:
            kind, note = "fail", first_failure(exercise.message)
        counts[kind] += 1
        rows.append(f"  {MARKS[kind]} {name}")
        if note:  # wrapped under the name, so a long message stays readable in a terminal
            rows += textwrap.wrap(note, width - 1, initial_indent=" " * 6, subsequent_indent=" " * 6)
    summary = ", ".join(f"{counts[kind]} {kind}" for kind in MARKS)
    return [f"{heading}: {summary}", *[f"  ! {error}" for error in report.errors], *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.progress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=WORKSPACE,
                        help="the folder of your notebooks (default: workspace/)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds an exercise may run before it counts as failed (default %(default)s)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout:g}")
    if not args.workspace.is_dir():
        print(f"No {args.workspace.name}/ folder yet ({args.workspace}): run `make lab` first. It copies "
              "the chapter notebooks into workspace/, where your work lives.")
        return 0
    found = [(args.workspace / f"{c.stem}.ipynb", c) for c in chapters()]
    found = [(notebook, chapter) for notebook, chapter in found if notebook.is_file()]
    if not found:
        print(f"No chapter notebooks in {args.workspace} (expected names like 1_embedding_arithmetic.ipynb): "
              "run `make lab` to copy them there.")
        return 0
    print(f"Your progress in {args.workspace} (✓ passes, ✗ fails, · untouched)\n")
    for notebook, chapter in found:
        lines = chapter_progress(notebook, chapter, args.timeout)
        print("\n".join(lines) + ("\n" if len(lines) > 1 else ""), flush=True)
    print("\nFor every check of an exercise, run its check(...) cell in the notebook.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
