"""Benchmark: grade a class of chapter-1 submissions with ``python -m utils.grade --jobs 2``.

The class is N copies of the solved notebook (every exercise runs every check). Prints
submissions per minute, and the grader's overhead per submission above the student's
own compute, which is measured here by running the reference functions on the same
check cases in this process (what a perfectly efficient grader would have to run).

    .venv/bin/python benchmarks/grading.py [N] [JOBS]      (default 50 submissions, 2 jobs)
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.checks import load_suite, run_case
from utils.sandbox import ForkServer

ROOT = Path(__file__).resolve().parents[1]
SOLVED = ROOT / "solutions" / "1_embedding_arithmetic_solved.ipynb"
CHAPTER = "embedding_arithmetic"


def student_compute(repeats: int = 5) -> float:
    """Seconds the reference takes on every check case of the chapter (median of repeats)."""
    suite = load_suite(CHAPTER)
    reference = suite.reference()
    for case in suite.cases:  # warm-up: first calls pay lazy imports
        run_case(case, reference, 0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for case in suite.cases:
            run_case(case, reference, 0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(n: int = 50, jobs: int = 2) -> None:
    load_before = os.getloadavg()
    own = student_compute()
    start = time.perf_counter()
    ForkServer()  # alone, to report the one-off start-up the batch pays
    fork_server_start = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="grading-benchmark-") as tmp:
        submissions = Path(tmp, "class")
        submissions.mkdir()
        for i in range(n):
            shutil.copy(SOLVED, submissions / f"student_{i:03d}.ipynb")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "utils.grade", str(submissions), "--out",
                               str(Path(tmp, "reports")), "--jobs", str(jobs), "--chapter", CHAPTER,
                               "--quiet"], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"grading failed:\n{done.stderr[-3000:]}")
        scores = [line.rsplit(": ", 1)[1].split(" / ") for line in done.stdout.splitlines()]
        full = sum(score == maximum for score, maximum in scores)
    cores = os.cpu_count()
    per_submission = wall * min(jobs, cores) / n  # core-seconds each submission cost
    steady = (wall - fork_server_start) * min(jobs, cores) / n
    print(f"{n} chapter-1 submissions, --jobs {jobs}, {cores} cores, "
          f"load average before {load_before[0]:.1f} / after {os.getloadavg()[0]:.1f}")
    print(f"  full marks                         {full} of {n}")
    print(f"  wall clock, end to end             {wall:7.1f} s")
    print(f"  submissions per minute             {60 * n / wall:7.1f}")
    print(f"  student's own compute / submission {own * 1000:7.1f} ms  (reference on every check case)")
    print(f"  grading cost / submission          {per_submission:7.2f} core-s")
    print(f"  overhead above own compute         {per_submission - own:7.2f} core-s per submission")
    print(f"    of which fork server start-up    {fork_server_start:7.1f} s once, measured separately "
          f"(without it: {steady - own:.2f} core-s per submission)")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
