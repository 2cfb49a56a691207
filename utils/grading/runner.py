"""Grading one submission: its definitions in a sandboxed process, its checks here.

``run_submission`` starts a ``StudentProcess``, asks it to run the submission's
statements, then runs every check case of every exercise in this process with the
student's namespace as ``impl`` (``utils.checks.run_case``), and judges each outcome at
once against the reference's (so no large result is kept). Limits:

* each exercise (all of its cases) has ``Limits.timeout`` seconds, the definitions
  ``Limits.setup_timeout``, and the whole submission ``Limits.budget``, fresh starts
  included;
* a hang, crash or exit costs the exercise (or definition) it hits; a fresh process goes
  on from the next one, at most ``Limits.restarts`` times.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from utils.checks import Case, Outcome, Verdict, judge_case, load_suite, run_case
from utils.grading.limits import remove_tree
from utils.grading.remote import RemoteError, WorkerLost
from utils.grading.sandbox import ForkServer, Limits, StudentProcess
from utils.grading.wire import MAX_HEADER_BYTES
from utils.grading.submission import Submission

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


@dataclass
class ExerciseRun:
    """How running one exercise went: a verdict per case that ran, or why none did."""

    status: str = "ran"  # ran | timeout | crashed | missing
    message: str = ""
    verdicts: dict[str, Verdict] = field(default_factory=dict)


@dataclass
class SubmissionRun:
    exercises: dict[str, ExerciseRun]
    errors: list[str]
    seed: int
    isolation: list[str] = field(default_factory=list)  # the layers in force
    peak_memory_mb: float | None = None


class _Stopped(Exception):
    """Grading this submission cannot go on: the reason is the exercises' message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _lost(lost: WorkerLost, process: StudentProcess, returncode: int | None, timeout: float,
          over_budget: bool, budget: float) -> str:
    """Why the student's process stopped answering, in the student's words."""
    if lost.reason == "timeout":
        return f"the submission used up its {budget:g} s" if over_budget else \
            f"it ran longer than {timeout:g} s (an infinite loop?)"
    if lost.reason == "garbage":
        return "it wrote something else than answers into the grader's channel"
    return process.why_it_ended(returncode)


class _Worker:
    """The submission's current process, started (and its statements run) when needed."""

    def __init__(self, submission: Submission, scratch: str, limits: Limits, fork_server: bool):
        self.statements = submission.statements
        self.scratch, self.limits, self.fork_server = scratch, limits, fork_server
        self.process: StudentProcess | None = None
        self.skip: set[int] = set()
        self.reported: set[int] = set()
        self.errors: list[str] = []
        self.isolation: list[str] = []
        self.peak_memory_mb: float | None = None
        self.starts = 0
        self.budget_ends = time.monotonic() + limits.budget

    def deadline(self, seconds: float) -> float:
        return min(time.monotonic() + seconds, self.budget_ends)

    def over_budget(self) -> bool:
        return time.monotonic() >= self.budget_ends

    def ready(self) -> StudentProcess:
        """A process with the submission's definitions in it: the current one, or a fresh one."""
        while self.process is None:
            if self.over_budget():
                raise _Stopped("timeout", f"not graded: the submission used up its {self.limits.budget:g} s")
            if self.starts > self.limits.restarts:
                raise _Stopped("crashed", f"not graded: the submission's code ended its process "
                                          f"{self.starts - 1} times")
            self.starts += 1
            try:
                self.process = StudentProcess(self.scratch, self.limits, self.fork_server)
            except (WorkerLost, OSError) as exc:
                why = f"{exc.reason} {exc.detail}".strip() if isinstance(exc, WorkerLost) else str(exc)
                raise _Stopped("crashed", f"not graded: the grading process failed to start ({why})") from None
            self.isolation = self.process.isolation
            self._define()
        return self.process

    def _define(self) -> None:
        process = self.process
        process.transport.deadline = self.deadline(self.limits.setup_timeout)
        for index, statement in enumerate(self.statements):
            if index in self.skip:
                continue
            try:
                process.endpoint.request("exec", payload=[statement.code, statement.origin])
            except RemoteError as error:
                if index not in self.reported:
                    self.errors.append(f"{_where(statement)}: {error.description[:500]}")
                    self.reported.add(index)
            except WorkerLost as lost:
                why = _lost(lost, process, self.stop(lost), self.limits.setup_timeout, self.over_budget(),
                            self.limits.budget)
                self.errors.append(f"{_where(statement)}: skipped, because running it failed ({why})")
                self.skip.add(index)
                return

    def stop(self, lost: WorkerLost | None = None) -> int | None:
        """Stop the current process (``lost``: why it stopped answering); its exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        returncode = process.stop(ending=lost is not None and lost.reason == "eof")
        peak = process.peak_memory_mb()
        if peak is not None:
            self.peak_memory_mb = max(self.peak_memory_mb or 0.0, peak)
        return returncode


def _where(statement) -> str:
    """A statement as the student finds it: its cell (or file) and what it defines."""
    return f"{statement.origin} ({', '.join(statement.defines)})" if statement.defines else statement.origin


def run_submission(submission: Submission, chapter: str, exercises: list[str] | None = None, seed: int = 0,
                   limits: Limits = Limits(), fork_server: bool = False,
                   judge: Callable[[Case, Outcome], Verdict] | None = None) -> SubmissionRun:
    """Run every case of ``exercises`` (default: all of the chapter's) on the submission.

    ``fork_server=True`` forks workers from a process that has imported torch & co.
    already: much faster for a batch, once its own start-up (seconds) is paid; the
    isolation is the same. ``judge`` turns each case's outcome into a verdict (default:
    against the reference's outcome). An answer of the student's code may hold at most 16
    times the data of the reference's largest answer in that case (plus 1 MB).
    """
    suite = load_suite(chapter)
    expected = expected_outcomes(chapter, seed)
    judge = judge or (lambda case, outcome: judge_case(case, expected[case.id], outcome))
    exercises = list(exercises or suite.exercises)
    defined = submission.defined_names()
    runs = {name: ExerciseRun() for name in exercises}
    if fork_server:
        ForkServer.shared()  # its one-off start is not the submission's time
    scratch = tempfile.mkdtemp(prefix="grading-")
    worker = _Worker(submission, scratch, limits, fork_server)
    try:
        for position, name in enumerate(exercises):
            if name.split(".")[0] not in defined:  # an exercise may be a method: "Class.method"
                runs[name] = ExerciseRun("missing", f"no definition of {name.split('.')[0]} found in the submission")
                continue
            try:
                _run_exercise(suite.cases_for(name), runs[name], worker, seed, judge, expected)
            except _Stopped as stopped:
                for later in exercises[position:]:
                    if runs[later].status == "ran" and not runs[later].verdicts:
                        runs[later] = ExerciseRun(stopped.status, stopped.message)
                break
    finally:
        worker.stop()
        if not remove_tree(scratch):
            worker.errors.append("note: the grader could not remove the submission's scratch files")
    return SubmissionRun(runs, worker.errors, seed, worker.isolation, worker.peak_memory_mb)


def _answer_limit(expected: Outcome, limits: Limits) -> int:
    """The data one answer of the student's code may hold in a case: far more than the
    reference's largest answer, far less than what would cost the grader its memory."""
    return min(limits.result_mb << 20, 16 * expected.answer_bytes + (1 << 20))


def _run_exercise(cases: list[Case], run: ExerciseRun, worker: _Worker, seed: int, judge,
                  expected: dict[str, Outcome]) -> None:
    ends = None
    for case in cases:
        process = worker.ready()
        ends = ends or worker.deadline(worker.limits.timeout)
        process.transport.deadline = min(ends, worker.budget_ends)
        limit = _answer_limit(expected[case.id], worker.limits)
        process.transport.max_bytes = limit + MAX_HEADER_BYTES
        try:
            outcome = run_case(case, process.endpoint, seed, limit)
        except WorkerLost as lost:
            over_budget = worker.over_budget() and time.monotonic() < ends
            run.status = "timeout" if lost.reason == "timeout" else "crashed"
            run.message = _lost(lost, process, worker.stop(lost), worker.limits.timeout, over_budget,
                                worker.limits.budget)
            return
        run.verdicts[case.id] = judge(case, outcome)
