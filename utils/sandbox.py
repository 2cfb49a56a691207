"""Running a submission's exercises in a separate, limited process.

``run_submission`` starts ``utils.worker`` in a scratch directory with a memory limit,
one CPU thread, no import path to ``solutions`` or ``tests``, and its own process
session. It waits for each exercise with a wall-clock limit. When the worker hangs,
crashes, exits or runs out of memory, the exercise it was on is charged with it, every
process the submission started is killed, and a fresh worker goes on from the next
exercise. What comes back is plain data per case, decoded without pickle.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from utils import plain
from utils.checks import Outcome, load_suite
from utils.submission import Submission

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("solutions", "tests")


@dataclass
class Limits:
    timeout: float = 60.0  # seconds per exercise (all of its cases)
    memory_mb: int = 4096  # address space of the student's process
    setup_timeout: float = 60.0  # seconds to import and define everything


@dataclass
class ExerciseRun:
    """How running one exercise went: its cases' outcomes, or why there are none."""

    status: str = "ran"  # ran | timeout | crashed | missing
    message: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class SubmissionRun:
    exercises: dict[str, ExerciseRun]
    errors: list[str]
    seed: int
    output_tail: str = ""


def _limit_resources(memory_mb: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _kill_everything(process: subprocess.Popen, token: str) -> None:
    """Kill the worker's process group and any process that inherited its token."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    marker = f"COURSE_GRADING_TOKEN={token}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _describe_death(returncode: int, memory_mb: int) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        if sig == "SIGKILL":
            return f"the process was killed (SIGKILL), most likely for using more than {memory_mb} MB"
        if sig == "SIGSEGV":
            return "the process crashed with a segmentation fault"
        return f"the process was killed by {sig}"
    return f"the process exited (exit code {returncode}) instead of returning"


def _reader(stream, events: queue.Queue) -> None:
    for line in stream:
        try:
            event = json.loads(line)
            events.put(event if isinstance(event, dict) else {"event": "garbage"})
        except json.JSONDecodeError:
            events.put({"event": "garbage"})
    events.put({"event": "eof"})


def _outcome(event: dict) -> Outcome:
    if "error" in event:
        return Outcome(error=str(event["error"]))
    try:
        return Outcome(value=plain.decode(event["value"]))
    except Exception as exc:  # noqa: BLE001 - whatever the worker sent, grading goes on
        return Outcome(error=f"the result could not be read back ({exc})")


def run_submission(submission: Submission, chapter: str, exercises: list[str] | None = None,
                   seed: int = 0, limits: Limits = Limits()) -> SubmissionRun:
    """Run every case of ``exercises`` (default: all of the chapter's) on the submission."""
    suite = load_suite(chapter)
    checks_file = ROOT / "tests" / f"test_{chapter}.py"
    exercises = list(exercises or suite.exercises)
    defined = submission.defined_names()
    runs = {name: ExerciseRun() for name in exercises}
    for name in exercises:
        if name not in defined:
            runs[name] = ExerciseRun("missing", f"no definition of {name} found in the submission")
    pending = [name for name in exercises if runs[name].status != "missing"]
    errors: list[str] = []
    skip: set[int] = set()
    output_tail = ""
    statements = [{"code": s.code, "origin": s.origin} for s in submission.statements]

    with tempfile.TemporaryDirectory(prefix="grading-") as scratch:
        while pending:
            token = uuid.uuid4().hex
            read_fd, write_fd = os.pipe()
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch,
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "COURSE_GRADING_TOKEN": token}
            process = subprocess.Popen(
                [sys.executable, "-I", "-m", "utils.worker"], cwd=scratch, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(write_fd,), start_new_session=True,
                preexec_fn=_limit_resources(limits.memory_mb))
            os.close(write_fd)
            job = {"result_fd": write_fd, "statements": statements, "skip": sorted(skip),
                   "checks_source": checks_file.read_text(), "checks_filename": str(checks_file),
                   "exercises": pending, "seed": seed, "blocked": list(BLOCKED)}
            try:
                process.stdin.write(json.dumps(job).encode())
                process.stdin.close()
            except BrokenPipeError:
                pass
            events: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(os.fdopen(read_fd), events), daemon=True).start()

            current_statement, current_exercise = None, None
            deadline = time.monotonic() + limits.setup_timeout
            while True:
                try:
                    event = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    event = {"event": "timeout"}
                kind = event.get("event")
                if kind == "statement":
                    current_statement = event.get("index")
                elif kind == "statement_error":
                    index = event.get("index")
                    if isinstance(index, int) and 0 <= index < len(statements):
                        errors.append(f"{statements[index]['origin']}: {event.get('error')}")
                elif kind == "exercise" and event.get("name") in pending:
                    current_exercise = event["name"]
                    deadline = time.monotonic() + limits.timeout
                elif kind == "case" and current_exercise is not None:
                    runs[current_exercise].outcomes[str(event.get("id"))] = _outcome(event)
                elif kind in ("done", "timeout", "eof", "garbage"):
                    break
            _kill_everything(process, token)
            if kind == "done":
                break
            why = (f"it ran longer than {limits.timeout:g} s (an infinite loop?)" if kind == "timeout"
                   else _describe_death(process.returncode, limits.memory_mb) if kind == "eof"
                   else "it wrote garbage into the grader's result channel")
            if current_exercise is not None:
                runs[current_exercise].status = "timeout" if kind == "timeout" else "crashed"
                runs[current_exercise].message = why
                pending = pending[pending.index(current_exercise) + 1:]
            elif current_statement is not None:
                errors.append(f"{statements[current_statement]['origin']}: skipped, because "
                              f"running its definitions failed ({why})")
                skip.add(current_statement)
            else:
                errors.append(f"the grading process failed to start: {why}")
                for name in pending:
                    runs[name] = ExerciseRun("crashed", f"not graded: {why}")
                break
            log = Path(scratch, "output.log")
            if log.exists():
                output_tail = log.read_text(errors="replace")[-2000:]
                log.unlink()
    return SubmissionRun(runs, errors, seed, output_tail)
