"""Running a submission's exercises in a separate, limited process.

``run_submission`` starts ``utils.worker`` in a scratch directory with a memory limit, one
CPU thread, a clean environment and its own process session. The worker isolates itself
(no network, its own PID namespace, Landlock: it can read only the Python installation and
``utils/``, write only the scratch directory; see ``utils.worker``). The grader waits for
each exercise with a wall-clock limit. When the worker hangs, crashes, exits or runs out of
memory, the exercise it was on is charged with it, every process the submission started
is killed, and a fresh worker goes on from the next exercise.

The result channel is untrusted: the student's code can write to it. So the protocol is
strict (events in the expected order, known case ids, bounded line length, a deadline
for the whole run that no event extends) and values are decoded without pickle. What
comes back can only ever be plain data that the grader compares with its own expectation.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from utils import plain
from utils.checks import Outcome, load_suite
from utils.submission import COURSE_INTERNALS, Submission

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = COURSE_INTERNALS
MAX_EVENT_BYTES = 64 << 20  # one case's result; larger is garbage


@dataclass
class Limits:
    timeout: float = 60.0  # seconds per exercise (all of its cases)
    memory_mb: int = 4096  # address space of the student's process
    setup_timeout: float = 60.0  # seconds to import and define everything
    output_mb: int = 64  # largest file the student's process may write


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
    isolation: list[str] = field(default_factory=list)  # what the kernel granted


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def readable_paths() -> list[str]:
    """What the student's process may read: the system, Python, its packages, ``utils/``.

    Never a directory that holds ``solutions/`` or ``tests/`` (the repository root).
    """
    candidates = ["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys",
                  "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", sys.prefix,
                  sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  *sysconfig.get_paths().values(), *sys.path, str(ROOT / "utils")]
    hidden = [ROOT / name for name in BLOCKED]
    kept = []
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        path = Path(candidate).resolve()
        if any(_inside(h, path) for h in hidden) or any(_inside(path, h) for h in hidden):
            continue
        kept.append(str(path))
    return sorted(set(kept))


def _rlimits(limits: Limits) -> dict[str, int]:
    return {"RLIMIT_AS": limits.memory_mb << 20, "RLIMIT_CORE": 0, "RLIMIT_FSIZE": limits.output_mb << 20}


def _limit_resources(limits: Limits):
    def apply():
        for name, value in _rlimits(limits).items():
            resource.setrlimit(getattr(resource, name), (value, value))
    return apply


def _environment(home: str, token: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home,
            "MPLCONFIGDIR": home, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
            "PYTHONHASHSEED": "0", "COURSE_GRADING_TOKEN": token}


class _Spawned:
    """A worker started directly (``subprocess``): the same interface as a forked one."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.pid = process, process.pid

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class ForkServer:
    """One process that has imported torch & co. and forks a worker per run (fast start).

    Started on first use, shared by every thread of the grader; it ends, killing its
    workers, when the grader ends (end of file on its socket). See ``utils.worker.serve``.
    """

    _instance: ForkServer | None = None
    _instance_lock = threading.Lock()

    def __init__(self, start_timeout: float = 300.0):
        self.home = tempfile.TemporaryDirectory(prefix="grading-forkserver-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "utils.worker", "--serve", str(theirs.fileno())],
            cwd=self.home.name, env=_environment(self.home.name, ""), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            start_new_session=True)
        theirs.close()
        self.socket = ours
        self.socket.settimeout(start_timeout)
        if self.socket.recv(1 << 16) != b'{"ready": true}':
            raise RuntimeError("the fork server did not start")
        self.socket.settimeout(None)
        self.lock = threading.Lock()
        self.pids: queue.Queue = queue.Queue()
        self.exits: dict[int, int] = {}
        self.changed = threading.Condition()
        self.alive = True
        threading.Thread(target=self._listen, daemon=True).start()

    @classmethod
    def shared(cls) -> ForkServer | None:
        """The grader's fork server, or None if it cannot run here (then workers are spawned)."""
        with cls._instance_lock:
            if cls._instance is None or not cls._instance.alive:
                try:
                    cls._instance = ForkServer()
                except (OSError, RuntimeError):
                    return None
            return cls._instance

    def _listen(self) -> None:
        while True:
            try:
                message = json.loads(self.socket.recv(1 << 16) or b"null")
            except (OSError, ValueError):
                message = None
            if message is None:
                with self.changed:
                    self.alive = False
                    self.changed.notify_all()
                self.pids.put(None)
                return
            if "pid" in message:
                self.pids.put(message["pid"])
            else:
                with self.changed:
                    self.exits[message["exit"]] = message["status"]
                    self.changed.notify_all()

    def spawn(self, cwd: str, env: dict, limits: Limits, job_fd: int, result_fd: int) -> _Forked:
        request = json.dumps({"cwd": cwd, "env": env, "limits": _rlimits(limits)}).encode()
        with self.lock:
            socket.send_fds(self.socket, [request], [job_fd, result_fd])
            pid = self.pids.get(timeout=60)
        if pid is None:
            raise OSError("the fork server died")
        return _Forked(self, pid)


class _Forked:
    """A worker the fork server started; its exit status comes through the server."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            with self.server.changed:
                self.server.changed.wait_for(
                    lambda: self.pid in self.server.exits or not self.server.alive, timeout)
                status = self.server.exits.pop(self.pid, None)
            if status is not None:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _start_worker(scratch: str, token: str, limits: Limits, job: dict, fork_server: bool):
    """Start a worker on ``job``; returns it and the read end of its result pipe."""
    read_fd, write_fd = os.pipe()
    server = ForkServer.shared() if fork_server else None
    if server is not None:
        job_read, job_write = os.pipe()
        try:
            worker = server.spawn(scratch, _environment(scratch, token), limits, job_read, write_fd)
        finally:
            os.close(job_read)
            os.close(write_fd)
        job["result_fd"] = None  # the fork server hands the pipe over itself
        stdin = os.fdopen(job_write, "wb")
    else:
        job["result_fd"] = write_fd
        process = subprocess.Popen(
            [sys.executable, "-I", "-m", "utils.worker"], cwd=scratch,
            env=_environment(scratch, token), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,),
            start_new_session=True, preexec_fn=_limit_resources(limits))
        os.close(write_fd)
        worker, stdin = _Spawned(process), process.stdin
    try:
        stdin.write(json.dumps(job).encode())
        stdin.close()
    except BrokenPipeError:
        pass
    return worker, read_fd


def _kill_everything(process, init_pid: int | None, token: str) -> int | None:
    """Kill the worker, its PID namespace, its process group, and anything with its token."""
    if init_pid is not None:
        try:  # PID 1 of the namespace: the kernel kills every process inside with it
            os.kill(init_pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait(10)  # the worker's parent now kills what is left, then exits
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    returncode = process.wait(30)
    marker = f"COURSE_GRADING_TOKEN={token}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
    return returncode


def _describe_death(returncode: int, memory_mb: int) -> str:
    if returncode < 0:
        sig = signal.Signals(-returncode).name
        if sig == "SIGKILL":
            return f"the process was killed (SIGKILL), most likely for using more than {memory_mb} MB"
        if sig == "SIGSEGV":
            return "the process crashed with a segmentation fault"
        if sig == "SIGXFSZ":
            return "the process wrote a file larger than the limit"
        return f"the process was killed by {sig}"
    return f"the process exited (exit code {returncode}) instead of returning"


def _reader(stream, events: queue.Queue) -> None:
    """Parse the result pipe line by line; anything malformed ends the run as garbage."""
    while True:
        line = stream.readline(MAX_EVENT_BYTES)
        if not line:
            events.put({"event": "eof"})
            return
        try:
            if not line.endswith(b"\n"):
                raise ValueError("line too long")
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError("not an event")
        except Exception:  # noqa: BLE001 - RecursionError, UnicodeDecodeError, ...
            events.put({"event": "garbage"})
            return
        events.put(event)


def _outcome(event: dict) -> Outcome:
    if "error" in event:
        return Outcome(error=str(event["error"])[:2000])
    try:
        return Outcome(value=plain.decode(event["value"]))
    except Exception as exc:  # noqa: BLE001 - whatever the worker sent, grading goes on
        return Outcome(error=f"the result could not be read back ({type(exc).__name__})")


def run_submission(submission: Submission, chapter: str, exercises: list[str] | None = None,
                   seed: int = 0, limits: Limits = Limits(), fork_server: bool = False) -> SubmissionRun:
    """Run every case of ``exercises`` (default: all of the chapter's) on the submission.

    ``fork_server=True`` forks workers from a process that has imported torch & co.
    already: much faster for a batch, once its own start-up (seconds) is paid; the
    isolation is the same.
    """
    suite = load_suite(chapter)
    checks_file = ROOT / "tests" / f"test_{chapter}.py"
    exercises = list(exercises or suite.exercises)
    case_ids = {name: [c.id for c in suite.cases_for(name)] for name in exercises}
    defined = submission.defined_names()
    runs = {name: ExerciseRun() for name in exercises}
    for name in exercises:
        if name.split(".")[0] not in defined:  # an exercise may be a method: "Class.method"
            runs[name] = ExerciseRun("missing", f"no definition of {name.split('.')[0]} found in the submission")
    pending = [name for name in exercises if runs[name].status != "missing"]
    errors: list[str] = []
    isolation: list[str] = []
    skip: set[int] = set()
    statements = [{"code": s.code, "origin": s.origin} for s in submission.statements]
    readable = readable_paths()

    with tempfile.TemporaryDirectory(prefix="grading-", ignore_cleanup_errors=True) as scratch:
        while pending:
            token = uuid.uuid4().hex
            job = {"statements": statements, "skip": sorted(skip),
                   "checks_source": checks_file.read_text(), "checks_filename": str(checks_file),
                   "exercises": pending, "seed": seed, "blocked": list(BLOCKED),
                   "readable": readable, "writable": [scratch, "/dev/null"]}
            process, read_fd = _start_worker(scratch, token, limits, job, fork_server)
            events: queue.Queue = queue.Queue()
            threading.Thread(target=_reader, args=(os.fdopen(read_fd, "rb"), events), daemon=True).start()

            # The events must arrive in this order; the deadlines only ever come closer.
            started = time.monotonic()
            hard_deadline = started + limits.setup_timeout + limits.timeout * len(pending)
            deadline = started + limits.setup_timeout
            init_pid, announced, current_statement, current_exercise = None, False, None, None
            next_exercise, expected_cases = 0, []
            while True:
                try:
                    event = events.get(timeout=max(0.0, min(deadline, hard_deadline) - time.monotonic()))
                except queue.Empty:
                    event = {"event": "timeout"}
                kind = event.get("event")
                if kind == "started" and init_pid is None and isinstance(event.get("pid"), int):
                    init_pid = event["pid"]
                elif kind == "sandbox" and not announced and isinstance(event.get("isolation"), list):
                    announced, isolation = True, [str(x) for x in event["isolation"]]
                elif kind == "statement" and current_exercise is None and isinstance(event.get("index"), int) \
                        and (-1 if current_statement is None else current_statement) < event["index"] < len(statements):
                    current_statement = event["index"]
                elif kind == "statement_error" and current_exercise is None and \
                        current_statement is not None and event.get("index") == current_statement:
                    errors.append(f"{statements[current_statement]['origin']}: {str(event.get('error'))[:500]}")
                elif kind == "exercise" and next_exercise < len(pending) and \
                        event.get("name") == pending[next_exercise] and not expected_cases:
                    current_exercise = pending[next_exercise]
                    next_exercise += 1
                    expected_cases = list(case_ids[current_exercise])
                    deadline = time.monotonic() + limits.timeout
                elif kind == "case" and expected_cases and event.get("id") == expected_cases[0]:
                    runs[current_exercise].outcomes[expected_cases.pop(0)] = _outcome(event)
                elif kind == "fatal" and current_exercise is None:
                    kind = "fatal"
                    break
                elif kind == "done" and next_exercise == len(pending) and not expected_cases:
                    break
                else:
                    if kind not in ("timeout", "eof"):
                        kind = "garbage"
                    break
            if kind == "eof":  # it is ending by itself: let it say how
                process.wait(5)
            returncode = _kill_everything(process, init_pid, token)
            if kind == "done":
                break
            if kind == "fatal":
                why = str(event.get("error"))[:500]
                errors.append(f"internal error: {why}")
                for name in pending:
                    runs[name] = ExerciseRun("crashed", "not graded: the grader could not run the checks")
                break
            why = (f"it ran longer than {limits.timeout:g} s (an infinite loop?)" if kind == "timeout"
                   else _describe_death(returncode, limits.memory_mb) if kind == "eof"
                   else "it wrote something else than results into the grader's result channel")
            if current_exercise is not None:
                runs[current_exercise].status = "timeout" if kind == "timeout" else "crashed"
                runs[current_exercise].message = why
                pending = pending[pending.index(current_exercise) + 1:]
            elif current_statement is not None and current_statement not in skip:
                if kind == "timeout":
                    why = f"it ran longer than {limits.setup_timeout:g} s"
                errors.append(f"{statements[current_statement]['origin']}: skipped, because "
                              f"running its definitions failed ({why})")
                skip.add(current_statement)
            else:
                errors.append(f"the grading process failed to start: {why}")
                for name in pending:
                    runs[name] = ExerciseRun("crashed", f"not graded: {why}")
                break
    return SubmissionRun(runs, errors, seed, isolation)
