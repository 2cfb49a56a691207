"""Grade a class's notebooks against the hidden checks: ``python -m utils.grade``.

    python -m utils.grade SUBMISSION [SUBMISSION ...] --out DIR [--chapter NAME] [--jobs N]
        [--shard K/N] [--timeout SECONDS] [--budget SECONDS] [--memory MB] [--processes N]
        [--cpus N] [--format json,gradescope,junit,csv] [--seed N] [--points NAME=P,...]
        [--all-or-nothing]
    python -m utils.grade --merge SHARD_DIR [SHARD_DIR ...] --out DIR [--format ...]

A SUBMISSION is a ``.ipynb`` or ``.py`` file, or a folder searched for them (hidden files
and folders skipped). Each one gets ``DIR/<name>.json``, where ``<name>`` is its path
relative to the folder it was found in (a given file: its own name), escaped (see
``reports.file_name``); ``csv`` adds ``DIR/gradebook.csv``, ``gradescope`` adds
``DIR/gradescope/<name>/results.json``, ``junit`` adds ``DIR/junit.xml``, each in the
order of the names. A symbolic link is not graded: its report says so.

Before grading, the reference solution of each chapter in the batch is graded in the
sandbox, with the same limits, as a canary: when it does not get full marks, the machine
or the installation cannot grade (nothing is graded, exit status 1).

``--shard K/N`` (0 <= K < N) grades only the submissions whose name hashes to K: run N
shards anywhere (a CI matrix, a Slurm array, a Kubernetes indexed job), then ``--merge``
their output folders into one: the result equals an unsharded run's, timings apart.

Exit status: 0 when every submission got a report, 1 when a canary failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from utils.checks import CHAPTERS, load_suite
from utils.grading.reports import Policy, report, write_batch, write_report
from utils.grading.runner import run_submission
from utils.grading.sandbox import COURSE, Limits
from utils.grading.submission import SUFFIXES, infer_chapter, read_submission

FORMATS = ("json", "gradescope", "junit", "csv")
SOLVED = COURSE.parent / "solutions"


@dataclass(frozen=True)
class Found:
    """A submission file, and the name its report goes by."""

    path: Path
    name: str


def collect(paths: list[str]) -> list[Found]:
    """The submissions: given files, and the notebooks and .py files under given folders.

    Raises ValueError for a path that is not there or not a submission, or for two files
    that would share a report name.
    """
    found: dict[str, Found] = {}
    for given in map(Path, paths):
        if given.is_dir():
            for directory, folders, files in os.walk(given):
                folders[:] = sorted(f for f in folders if not f.startswith("."))
                for file in sorted(files):
                    path = Path(directory, file)
                    if path.suffix in SUFFIXES and not file.startswith("."):
                        _add(found, Found(path, path.relative_to(given).as_posix()))
        elif given.is_file() or given.is_symlink():
            if given.suffix not in SUFFIXES:
                raise ValueError(f"{given}: a submission is a notebook (.ipynb) or a Python file (.py)")
            _add(found, Found(given, given.name))
        else:
            raise ValueError(f"{given}: no such file or directory")
    return sorted(found.values(), key=lambda f: f.name)


def _add(found: dict[str, Found], submission: Found) -> None:
    other = found.get(submission.name)
    if other is not None and os.path.realpath(other.path) != os.path.realpath(submission.path):
        raise ValueError(f"{other.path} and {submission.path} would both be reported as {submission.name!r}; "
                         "give their folders instead, or rename one")
    found[submission.name] = submission


def shard(found: list[Found], index: int, count: int) -> list[Found]:
    """The submissions of shard ``index`` of ``count``: a split by name, the same everywhere."""
    return [f for f in found if int(hashlib.sha256(f.name.encode()).hexdigest(), 16) % count == index]


# --------------------------------------------------------------------------- grading


def grade_one(found: Found, chapter: str | None, policy: Policy, limits: Limits, fork_server: bool) -> dict:
    """The report of one submission. Never raises: whatever goes wrong is in the report."""
    started = time.monotonic()
    try:
        if found.path.is_symlink():
            return report(found.name, chapter, [f"{found.name} is a symbolic link, which is not graded: "
                                                "submit the notebook file itself"], None, policy)
        try:
            submission = read_submission(found.path)
        except (OSError, ValueError) as exc:
            return report(found.name, chapter, [f"the submission could not be read: {exc}"], None, policy)
        chapter = chapter or infer_chapter(submission)
        if chapter is None:
            return report(found.name, None, submission.errors + [
                "could not tell which chapter this submission is for (no exercise of any chapter is "
                "defined in it); grade it with --chapter NAME"], None, policy)
        run = run_submission(submission, chapter, seed=policy.seed, limits=limits, fork_server=fork_server)
        return report(found.name, chapter, submission.errors + run.errors, run, policy,
                      submission.skipped_names(), time.monotonic() - started)
    except Exception:  # noqa: BLE001 - the grader's own bug: this submission's report says so
        print(f"grader: internal error on {found.path}:\n{traceback.format_exc()}", file=sys.stderr)
        return report(found.name, chapter, ["internal error in the grader; tell your instructor"], None, policy)


class CanaryFailed(Exception):
    """The reference solution does not pass its own checks in the sandbox here."""


_canaries: dict[tuple, str | None] = {}
_canary_lock = threading.Lock()


def canary(chapter: str, policy: Policy, limits: Limits, fork_server: bool) -> None:
    """Grade the chapter's solved notebook in the sandbox; raise ``CanaryFailed`` unless it
    gets full marks (once per chapter, seed and limits in this process)."""
    key = (chapter, policy.seed, limits)
    with _canary_lock:
        if key not in _canaries:
            solved = [p for p in sorted(SOLVED.glob("*_solved.ipynb")) if infer_chapter(read_submission(p)) == chapter]
            if not solved:
                _canaries[key] = None
            else:
                result = grade_one(Found(solved[0], solved[0].name), chapter, replace(policy, points={}), limits,
                                   fork_server)
                failed = [f"{e['name']}: {e['message']}" for e in result["exercises"] if e["status"] != "passed"]
                problems = result["errors"] + failed
                _canaries[key] = None if not problems and result["exercises"] else \
                    f"the reference solution {solved[0].name} does not get full marks in the sandbox on this " \
                    f"machine ({(problems or ['no exercise was graded'])[0][:500]}). Nothing was graded: check " \
                    "the installation (is the editable install this checkout?) and the limits."
        if _canaries[key]:
            raise CanaryFailed(_canaries[key])


def grade_batch(found: list[Found], out: Path, chapter: str | None = None, jobs: int = 1,
                policy: Policy | None = None, limits: Limits = Limits(), formats=("json", "csv"),
                progress: bool = True, fork_server: bool = True) -> list[dict]:
    """Grade every submission (``jobs`` at a time) and write the reports; returns them.

    Raises ``CanaryFailed`` before grading anything if a chapter's reference fails.
    """
    policy = policy or Policy()
    chapters = {chapter} if chapter else {_chapter_of(f) for f in found} - {None}
    for name in sorted(chapters):
        canary(name, policy, limits, fork_server)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(found), unit="submission", desc="grading", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    reports = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, f, chapter, policy, limits, fork_server): f for f in found}
        for future in as_completed(futures):
            result = reports[futures[future].name] = future.result()
            write_report(result, out, list(formats))
            bar.set_postfix_str(f"{result['submission'][:40]}: {result['score']:g}/{result['max_score']:g}")
            bar.update()
    bar.close()
    ordered = [reports[f.name] for f in found]
    # written again once every student's process is gone: nothing a submission wrote survives
    write_batch(ordered, out, list(formats))
    return ordered


def _chapter_of(found: Found) -> str | None:
    try:
        return infer_chapter(read_submission(found.path)) if not found.path.is_symlink() else None
    except (OSError, ValueError):
        return None


def merge(folders: list[Path], out: Path, formats: list[str]) -> list[dict]:
    """One batch's files from the outputs of its shards (their JSON reports)."""
    reports: dict[str, dict] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            found = json.loads(path.read_text(encoding="utf-8"))
            if not (isinstance(found, dict) and {"submission", "exercises", "score"} <= set(found)):
                continue
            if found["submission"] in reports:
                raise ValueError(f"{found['submission']!r} is in two shards; merge each shard once")
            reports[found["submission"]] = found
    if not reports:
        raise ValueError(f"no reports in {', '.join(map(str, folders))}")
    ordered = [reports[name] for name in sorted(reports)]
    write_batch(ordered, out, formats)
    return ordered


# --------------------------------------------------------------------------- the command


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


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 0 <= K < N, not {text!r}")
    return int(index), int(count)


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                        help="a notebook (.ipynb) or Python file (.py), or a folder of them; with --merge, "
                             "the output folders of the shards")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where reports go")
    parser.add_argument("--merge", action="store_true", help="merge the reports of shards (see --shard)")
    parser.add_argument("--chapter", choices=CHAPTERS, help="inferred from each submission if omitted")
    parser.add_argument("--jobs", type=_positive(int), default=1, help="submissions graded in parallel")
    parser.add_argument("--shard", type=_shard, metavar="K/N", help="grade only shard K of N (0 <= K < N)")
    defaults = Limits()
    parser.add_argument("--timeout", type=_positive(float), default=defaults.timeout,
                        help="seconds per exercise (default %(default)s)")
    parser.add_argument("--budget", type=_positive(float), default=defaults.budget,
                        help="seconds per submission in all, fresh starts included (default %(default)s)")
    parser.add_argument("--memory", type=_positive(int), default=defaults.memory_mb,
                        help="MB for all of a submission's processes together (default %(default)s)")
    parser.add_argument("--processes", type=_positive(int), default=defaults.tasks,
                        help="processes and threads a submission may have at once (default %(default)s)")
    parser.add_argument("--cpus", type=_positive(float), default=defaults.cpus,
                        help="CPUs a submission may use in all (default %(default)s)")
    parser.add_argument("--format", type=_formats, default=["json", "csv"], dest="formats",
                        help="comma-separated, of json,gradescope,junit,csv (default json,csv; the JSON "
                             "reports are always written)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every check case (default 0)")
    parser.add_argument("--points", type=_points, default={}, metavar="NAME=P,...",
                        help="points of exercises (default: the chapter's, else 1 each)")
    parser.add_argument("--all-or-nothing", action="store_true",
                        help="an exercise scores its points only when every check passes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a directory")
    if args.merge:
        try:
            reports = merge(list(map(Path, args.submissions)), args.out, args.formats)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    else:
        try:
            found = collect(args.submissions)
            if args.chapter:
                load_suite(args.chapter)
        except ValueError as exc:
            parser.error(str(exc))
        except ModuleNotFoundError:
            parser.error(f"chapter {args.chapter!r} has no hidden checks yet (tests/test_{args.chapter}.py)")
        if not found:
            parser.error("no .ipynb or .py files in the given folders")
        if args.shard:
            found = shard(found, *args.shard)
        limits = Limits(timeout=args.timeout, budget=args.budget, memory_mb=args.memory, tasks=args.processes,
                        cpus=args.cpus, setup_timeout=max(60.0, args.timeout))
        policy = Policy(points=args.points, all_or_nothing=args.all_or_nothing, seed=args.seed)
        try:
            reports = grade_batch(found, args.out, args.chapter, args.jobs, policy, limits, args.formats,
                                  progress=not args.quiet and len(found) > 1)
        except CanaryFailed as exc:
            print(f"grader: {exc}", file=sys.stderr)
            return 1
    for result in reports:
        print(f"{result['submission']}: {result['score']:g} / {result['max_score']:g}")
    return 0
