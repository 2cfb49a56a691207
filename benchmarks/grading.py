"""Benchmark: the grader on whole classes, and its limits under load. Prints three tables.

1. Throughput: N copies of chapter 1's and of chapter 4's solved notebook (every exercise
   runs every check), graded with ``python -m utils.grade --jobs JOBS``: wall clock,
   submissions per minute, full marks.
2. Limits for a submission as a whole: ``tests/submissions/limits.py`` graded with
   ``--memory 1024``: the peak memory of its whole process tree, the processes it got at
   once, its scratch and its CPU share, and the layers in force.
3. A CPU hog in the batch: honest chapter-1 submissions graded alone, then beside a
   submission whose processes (each in its own session) spin for its whole budget, with
   the default CPU share (``--cpus 1``) and without one (``--cpus 64``): the median time per
   honest submission (the first of each job slot also starts its worker) and the slowdown.

    .venv/bin/python benchmarks/grading.py [N] [JOBS]      (default 50 submissions, 2 jobs)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLVED = {"embedding_arithmetic": ROOT / "solutions" / "1_embedding_arithmetic_solved.ipynb",
          "saes": ROOT / "solutions" / "4_sparse_autoencoders_solved.ipynb"}
LIMITS = ROOT / "tests" / "submissions" / "limits.py"
HONEST = 8  # honest submissions in the CPU-hog batch
# Every exercise of chapter 1 forks eight spinning processes, each in its own session, and
# spins itself until the submission's budget is spent.
HOG = '''import os, time


def _spin():
    for _ in range(8):
        if os.fork() == 0:
            os.setsid()
            while True:
                pass
    while True:
        pass


def normalize_rows(E, eps=1e-8):
    _spin()
'''


def grade(folder: Path, out: Path, *options: str) -> tuple[float, list[dict]]:
    """Grade a folder with the command an instructor runs; wall seconds and the reports."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "utils.grade", str(folder), "--out", str(out), "--quiet",
                           *options], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"grading failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def throughput(tmp: Path, n: int, jobs: int) -> None:
    print(f"1. Throughput: {n} submissions per chapter, --jobs {jobs}, {os.cpu_count()} cores")
    print(f"   {'chapter':<22}{'wall s':>9}{'per minute':>12}{'full marks':>12}{'load before':>13}")
    for chapter, solved in SOLVED.items():
        folder = tmp / f"class_{chapter}"
        folder.mkdir()
        for i in range(n):
            shutil.copy(solved, folder / f"student_{i:03d}.ipynb")
        load = os.getloadavg()[0]
        wall, reports = grade(folder, tmp / f"reports_{chapter}", "--jobs", str(jobs), "--chapter", chapter)
        full = sum(r["score"] == r["max_score"] > 0 for r in reports)
        print(f"   {chapter:<22}{wall:9.1f}{60 * n / wall:12.1f}{f'{full} of {n}':>12}{load:13.1f}")


def limits(tmp: Path) -> None:
    folder = tmp / "limits"
    folder.mkdir()
    shutil.copy(LIMITS, folder / LIMITS.name)
    _, (report,) = grade(folder, tmp / "reports_limits", "--memory", "1024", "--timeout", "20", "--budget", "120")
    seen = {}
    for exercise in report["exercises"]:
        message = exercise["message"]
        if "RuntimeError: observed " in message:
            seen[exercise["name"]] = message.split("RuntimeError: observed ", 1)[1].split(" (at <")[0]
        else:
            seen[exercise["name"]] = message.splitlines()[0][:90] if message else exercise["status"]
    print("\n2. Limits for a submission as a whole (tests/submissions/limits.py, --memory 1024, defaults otherwise)")
    print(f"   peak memory of its whole process tree: {report['peak_memory_mb']} MB")
    for name, what in seen.items():
        print(f"   {name:<20} {what}")
    print(f"   layers in force: {', '.join(report['sandbox'])}")


def hog(tmp: Path, jobs: int) -> None:
    print(f"\n3. Honest submissions beside a CPU hog ({HONEST} honest chapter-1 submissions, --jobs {jobs})")
    print(f"   {'batch':<40}{'median s / honest submission':>30}{'slowdown':>10}")
    alone = None
    for label, with_hog, cpus in (("honest only", False, "1"), ("with the hog, --cpus 64 (no CPU share)", True, "64"),
                                  ("with the hog, --cpus 1 (the default)", True, "1")):
        folder = tmp / f"hog_{with_hog}_{cpus}"
        folder.mkdir()
        for i in range(HONEST):
            shutil.copy(SOLVED["embedding_arithmetic"], folder / f"student_{i:03d}.ipynb")
        if with_hog:
            (folder / "0_hog.py").write_text(HOG)
        _, reports = grade(folder, tmp / f"reports_hog_{with_hog}_{cpus}", "--jobs", str(jobs), "--cpus", cpus,
                           "--chapter", "embedding_arithmetic", "--timeout", "30", "--budget", "60")
        median = statistics.median(r["duration_s"] for r in reports if r["submission"].startswith("student_"))
        alone = alone or median
        print(f"   {label:<40}{median:30.2f}{median / alone:9.1f}x")


def main(n: int = 50, jobs: int = 2) -> None:
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="grading-benchmark-") as tmp:
        throughput(Path(tmp), n, jobs)
        limits(Path(tmp))
        hog(Path(tmp), jobs)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
