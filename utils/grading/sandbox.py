"""Starting, watching and stopping a student's process (the grader's side).

``StudentProcess`` starts ``utils.grading.worker`` (forked from a ``ForkServer`` that has
imported torch already, or as a fresh interpreter), in a scratch directory, with a plan
of what it may do: which dedicated user it becomes (when the grader is root), its
cgroups or else a ``Watchdog`` (``utils.grading.limits``), its rlimits, and the paths it
may read. It then talks to it through an ``Endpoint`` (``utils.grading.remote``) over two
pipes, with a deadline on every wait; a worker that hangs, ends, or says something that
is not a message becomes ``WorkerLost``. ``stop`` kills every process of the submission.

The worker imports the course package from the very directory the grader imported it
from (``BOOTSTRAP``), whatever the interpreter's own ``sys.path`` says.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import utils
from utils.grading.limits import Cgroup, Watchdog
from utils.grading.remote import GRADER, Endpoint, WorkerLost
from utils.grading.submission import COURSE_INTERNALS
from utils.grading.wire import PipeTransport, ProtocolError

COURSE = Path(utils.__file__).resolve().parent  # the course package: what the worker imports
SANDBOX_UID = 2_000_000_000  # a root grader's workers run as SANDBOX_UID + their job's slot
START_TIMEOUT = 60.0  # seconds for a worker to confine itself and say it is ready (no student code yet)
# a process's address space may exceed its memory by what libraries reserve and never touch
ADDRESS_SPACE_HEADROOM_MB = 4096
BOOTSTRAP = ("import importlib.util, sys; "
             "spec = importlib.util.spec_from_file_location('utils', sys.argv[1] + '/__init__.py', "
             "submodule_search_locations=[sys.argv[1]]); "
             "sys.modules['utils'] = module = importlib.util.module_from_spec(spec); "
             "spec.loader.exec_module(module); "
             "from utils.grading import worker; worker.main(sys.argv[2:])")


@dataclass(frozen=True)
class Limits:
    timeout: float = 60.0  # seconds per exercise (all of its cases)
    memory_mb: int = 4096  # all of the submission's processes together
    setup_timeout: float = 60.0  # seconds to run the submission's definitions
    budget: float = 600.0  # seconds for the whole submission, fresh starts included
    restarts: int = 10  # fresh processes after the submission crashed or hung, at most
    tasks: int = 64  # processes and threads alive at once
    cpus: float = 1.0  # CPUs for the whole submission
    scratch_mb: int = 256  # its scratch directory (and its largest file)
    result_mb: int = 64  # the largest answer its process may send


def readable_paths() -> list[str]:
    """What the student's process may read: the interpreter's own directories, the course
    package and the system's shared libraries; never the working directory, the folder of
    the submissions, ``solutions/`` or ``tests/``."""
    interpreter = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                   *(sysconfig.get_paths(vars={"base": base}).get(key) for base in (sys.prefix, sys.base_prefix)
                     for key in ("stdlib", "platstdlib", "purelib", "platlib"))}
    system = ["/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32", "/usr/bin", "/bin",
              "/usr/share/zoneinfo", "/etc/ld.so.cache", "/etc/localtime", "/proc", "/sys/devices/system/cpu",
              "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", str(COURSE)]
    hidden = [COURSE.parent / name for name in COURSE_INTERNALS]
    kept = set()
    for candidate in [*interpreter, *system]:
        if not candidate or not os.path.exists(candidate):
            continue
        path = Path(candidate).resolve()
        if any(h == path or path in h.parents for h in hidden):
            continue
        kept.add(str(path))
    return sorted(kept)


def _environment(home: str, token: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "MPLCONFIGDIR": home,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "COURSE_GRADING_TOKEN": token}


class ForkServer:
    """One process that has imported torch & co. and forks a worker per request (fast start).

    Started on first use, shared by every thread of the grader; it ends, killing its
    workers, when the grader ends (end of file on its socket). See ``worker.serve_forks``.
    """

    _instance: ForkServer | None = None
    _instance_lock = threading.Lock()

    def __init__(self, start_timeout: float = 300.0):
        self.home = tempfile.TemporaryDirectory(prefix="grading-forkserver-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", BOOTSTRAP, str(COURSE), "--serve", str(theirs.fileno())],
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

    def spawn(self, cwd: str, env: dict, plan: dict, fds: tuple[int, int]) -> _Forked:
        request = json.dumps({"cwd": cwd, "env": env, "plan": plan}).encode()
        with self.lock:
            socket.send_fds(self.socket, [request], list(fds))
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


class _Spawned:
    """A worker started as a fresh interpreter: the same interface as a forked one."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.pid = process, process.pid

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class _GraderPipe(PipeTransport):
    """The grader's end of the channel: whatever goes wrong on it means the worker is lost."""

    def send(self, header: dict, buffers: list) -> None:
        try:
            super().send(header, buffers)
        except TimeoutError:
            raise WorkerLost("timeout") from None
        except OSError:
            raise WorkerLost("eof") from None

    def receive(self) -> tuple[dict, list]:
        try:
            return super().receive()
        except TimeoutError:
            raise WorkerLost("timeout") from None
        except EOFError:
            raise WorkerLost("eof") from None
        except ProtocolError as exc:
            raise WorkerLost("garbage", str(exc)) from None


class _Slots:
    """Job slots of concurrently running workers: a root grader's dedicated user per slot."""

    def __init__(self):
        self.used: set[int] = set()
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            slot = next(i for i in range(len(self.used) + 1) if i not in self.used)
            self.used.add(slot)
            return slot

    def give(self, slot: int) -> None:
        with self.lock:
            self.used.discard(slot)


_slots = _Slots()


class StudentProcess:
    """One running worker of a submission: its endpoint, its isolation, and how to end it."""

    def __init__(self, scratch: str, limits: Limits, fork_server: bool):
        self.scratch, self.limits = scratch, limits
        self.token = uuid.uuid4().hex
        self.slot = _slots.take()
        root = os.geteuid() == 0
        self.uid = SANDBOX_UID + self.slot if root else None
        if root:
            os.chown(scratch, self.uid, self.uid)
        self.cgroup = Cgroup.create(f"{self.token}", limits.memory_mb, limits.tasks, limits.cpus)
        self.watchdog: Watchdog | None = None
        self.out_of_memory, self.peak_mb = False, None
        self.child_pid: int | None = None
        self.isolation: list[str] = []
        self.worker = None
        try:
            self._start(fork_server)
        except BaseException:
            self.stop()
            raise

    def _plan(self) -> dict:
        limits = self.limits
        return {"uid": self.uid, "gid": self.uid, "cgroups": self.cgroup.procs_files if self.cgroup else [],
                "rlimits": {"RLIMIT_AS": (limits.memory_mb + ADDRESS_SPACE_HEADROOM_MB) << 20, "RLIMIT_CORE": 0,
                            "RLIMIT_FSIZE": limits.scratch_mb << 20},
                "processes": limits.tasks, "scratch": self.scratch, "scratch_mb": limits.scratch_mb,
                "readable": readable_paths(), "writable": [self.scratch, "/dev/null"],
                "blocked": list(COURSE_INTERNALS), "max_bytes": limits.result_mb << 20}

    def _start(self, fork_server: bool) -> None:
        to_worker, from_grader = os.pipe()[::-1]
        from_worker, to_grader = os.pipe()
        theirs = (from_grader, to_grader)
        env, plan = _environment(self.scratch, self.token), self._plan()
        try:
            server = ForkServer.shared() if fork_server else None
            if server is not None:
                self.worker = server.spawn(self.scratch, env, plan, theirs)
            else:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-c", BOOTSTRAP, str(COURSE), *map(str, theirs)], cwd=self.scratch,
                    env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    pass_fds=theirs, start_new_session=True)
                self.worker = _Spawned(process)
                process.stdin.write(json.dumps(plan).encode())
                process.stdin.close()
        finally:
            for fd in theirs:
                os.close(fd)
        self.transport = _GraderPipe(from_worker, to_worker, self.limits.result_mb << 20)
        self.transport.deadline = time.monotonic() + START_TIMEOUT
        hello, _ = self.transport.receive()
        if type(hello.get("hello")) is not int:
            raise WorkerLost("garbage", "no hello")
        self.child_pid = hello["hello"]
        ready, _ = self.transport.receive()
        if type(ready.get("ready")) is not list:
            raise WorkerLost("garbage", "not ready")
        granted = [str(layer) for layer in ready["ready"]]
        if self.cgroup and "cgroup" in granted:
            self.isolation.append(self.cgroup.describe(self.limits.memory_mb, self.limits.tasks, self.limits.cpus))
        else:
            self.watchdog = Watchdog(self.worker.pid, self.limits.memory_mb, self.limits.tasks, self.limits.cpus,
                                     self.scratch, self.limits.scratch_mb, self.kill)
            self.isolation.append("watchdog (memory, tasks, CPU share and scratch of the whole submission)")
        self.isolation += [layer for layer in granted if layer != "cgroup"]
        self.endpoint = Endpoint(self.transport, GRADER)

    def kill(self) -> None:
        """Kill every process of the submission (safe to call from any thread, and twice)."""
        for pid in (self.child_pid, self.worker.pid if self.worker else None):
            if pid is not None:  # the first is PID 1 of the submission's namespace: all go with it
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.cgroup:
            self.cgroup.kill()
        if self.worker:
            try:
                os.killpg(self.worker.pid, signal.SIGKILL)
            except OSError:
                pass
        _kill_marked(self.token)

    def stop(self, ending: bool = False) -> int | None:
        """End the worker and everything it started; its exit status (None if unknown).

        ``ending``: the worker is ending by itself (its channel closed): let it say how first.
        """
        returncode = None
        if self.worker is not None:
            returncode = self.worker.wait(5) if ending else None
            self.kill()
            returncode = self.worker.wait(30) if returncode is None else returncode
        if self.watchdog:
            self.watchdog.stop()
        if self.cgroup:  # what it measured, before it goes
            self.out_of_memory = self.cgroup.oom_kills() > 0
            self.peak_mb = (self.cgroup.memory_peak() or 0) / 2**20
            self.cgroup.remove()
        if hasattr(self, "transport"):
            self.transport.close()
        _slots.give(self.slot)
        return returncode

    def peak_memory_mb(self) -> float | None:
        """The most memory all the submission's processes held at once (after ``stop``)."""
        return self.watchdog.peak_mb if self.watchdog else self.peak_mb

    def why_it_ended(self, returncode: int | None) -> str:
        """What the student is told about a worker that ended in the middle of their code
        (after ``stop``)."""
        limits = self.limits
        reason = self.watchdog.reason if self.watchdog else "memory" if self.out_of_memory else None
        if reason == "memory":
            return f"it used more than {limits.memory_mb} MB of memory (all its processes together)"
        if reason == "tasks":
            return f"it had more than {limits.tasks} processes and threads at once"
        if reason == "scratch":
            return f"it wrote more than {limits.scratch_mb} MB of files"
        if returncode is None:
            return "the process ended"
        if returncode < 0:
            name = signal.Signals(-returncode).name
            return {"SIGSEGV": "the process crashed with a segmentation fault",
                    "SIGXFSZ": f"it wrote a file larger than {limits.scratch_mb} MB",
                    "SIGKILL": "the process was killed (SIGKILL)"}.get(name, f"the process was killed by {name}")
        return f"the process exited (exit code {returncode}) instead of returning"


def _kill_marked(token: str) -> None:
    """The last resort where neither a PID namespace nor a cgroup holds the submission:
    kill every process that still carries its token in its environment."""
    marker = f"COURSE_GRADING_TOKEN={token}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
