"""The student's side of grading, run as ``python -I -m utils.worker`` by ``utils.sandbox``.

It reads one job (JSON) from stdin: the submission's statements, the chapter's check
source, the exercises to run, the seed, and what the student's code may read and write.
It then

1. isolates itself (``isolate_namespaces``): a new network namespace (no network at all)
   and a new PID namespace, inside a user namespace when it is not root. It forks; the
   child is PID 1 of the new namespace, so when the grader kills it every process the
   submission started dies with it. The parent, a child subreaper, waits, kills whatever
   the submission left behind (even without a PID namespace), and mirrors the child's exit.
2. in the child, restricts the file system with Landlock (``restrict_filesystem``): read
   only the Python installation and ``utils/``, write only the scratch directory, no TCP,
   no signals to processes outside. ``solutions/``, ``tests/``, the report directory and
   other students' files cannot be opened, whatever the student's code does.
3. runs the statements, then every case of every exercise, and writes one JSON line per
   event to the result pipe. Only plain data (``utils.plain``) is written; nothing is
   compared here, so nothing here decides a score.

Every layer is best effort: what the kernel refused is reported to the grader, which
records it (``SubmissionRun.isolation``). The import blocker below is always on.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import json
import os
import signal
import sys
import types

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000


class _Blocked(importlib.abc.MetaPathFinder):
    """Refuses imports of the reference solutions and the hidden checks."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not available while grading)",
                                      name=fullname)
        return None


# --------------------------------------------------------------------------- isolation


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def isolate_namespaces() -> list[str]:
    """Enter new network and PID namespaces if the kernel allows; say which ones."""
    uid, gid = os.getuid(), os.getgid()
    needs_user = os.geteuid() != 0  # unprivileged: namespaces need a user namespace
    for flags, names in ((CLONE_NEWNET | CLONE_NEWPID, ["network namespace", "pid namespace"]),
                         (CLONE_NEWNET, ["network namespace"]),
                         (CLONE_NEWPID, ["pid namespace"])):
        if _libc.unshare(ctypes.c_int(flags | (CLONE_NEWUSER if needs_user else 0))) == 0:
            if needs_user:  # keep the student's own ids inside, so files stay theirs
                _write("/proc/self/uid_map", f"{uid} {uid} 1")
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/gid_map", f"{gid} {gid} 1")
            return names
    return []


# Landlock (Linux 5.13+): syscall numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict_filesystem(readable: list[str], writable: list[str]) -> int:
    """Landlock this process: read ``readable``, write ``writable``, nothing else.

    Also denies TCP (ABI 4+) and signals or abstract sockets reaching outside (ABI 6+).
    Returns the Landlock ABI version used, or 0 where the kernel has no Landlock.
    """
    abi = _libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | \
        (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(handled, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    rules = [(path, _READ) for path in readable] + [(path, handled) for path in writable]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a path this machine does not have
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights & handled, fd)
        _libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(1),
                      ctypes.byref(rule), ctypes.c_uint32(0))
        os.close(fd)
    _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required to restrict oneself
    done = _libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    os.close(ruleset)
    return abi if done == 0 else 0


def _kill_descendants() -> None:
    """Kill every process left below this one (a subreaper inherits all orphans)."""
    me = str(os.getpid())
    while True:
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        os.kill(int(entry), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                continue
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _mirror_exit(status: int) -> None:
    """End this process the way the child ended (signal or exit code)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


# --------------------------------------------------------------------------- grading


def _register_sources(statements: list[dict]) -> None:
    """Let tracebacks quote the student's lines: each statement keeps its cell's numbering."""
    import linecache

    files: dict[str, list[str]] = {}
    for statement in statements:
        lines = files.setdefault(f"<{statement['origin']}>", [])
        for number, line in enumerate(statement["code"].splitlines(keepends=True)):
            if line.strip():
                lines += ["\n"] * (number + 1 - len(lines))
                lines[number] = line
    for filename, lines in files.items():
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def grade(job: dict, send, isolation: list[str]) -> None:
    """Restrict this process, run the submission's statements, then every case."""
    abi = restrict_filesystem(job["readable"], job["writable"])
    if abi:
        isolation.append(f"landlock (ABI {abi})")
    for name in job["blocked"]:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    sys.meta_path.insert(0, _Blocked(job["blocked"]))
    send(event="sandbox", isolation=isolation)

    from utils import plain
    from utils.checks import describe_exception, run_case

    checks = types.ModuleType("hidden_checks")
    checks.__file__ = job["checks_filename"]
    try:
        exec(compile(job["checks_source"], job["checks_filename"], "exec"), checks.__dict__)
        suite = checks.suite
    except Exception as exc:  # noqa: BLE001 - e.g. checks that import solutions
        send(event="fatal", error=f"the hidden checks do not load in the sandbox: {type(exc).__name__}: {exc}")
        return

    # the student's output goes to a log, so it can't interleave with results
    log = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)

    _register_sources(job["statements"])
    submission = types.ModuleType("__main__")
    sys.modules["__main__"] = submission
    namespace = submission.__dict__
    skip = set(job["skip"])
    for i, statement in enumerate(job["statements"]):
        if i in skip:
            continue
        send(event="statement", index=i)
        try:
            exec(compile(statement["code"], f"<{statement['origin']}>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: grading goes on
            send(event="statement_error", index=i, error=describe_exception(exc))
    impl = types.SimpleNamespace(**namespace)

    for exercise in job["exercises"]:
        send(event="exercise", name=exercise)
        for case in suite.cases_for(exercise):
            try:
                outcome = run_case(case, impl, job["seed"])
                payload = {"error": outcome.error} if outcome.error is not None else \
                    {"value": plain.encode(outcome.value)}
            except SystemExit as exc:
                payload = {"error": f"the code called sys.exit({exc.code!r}); a function must return"}
            except BaseException as exc:  # noqa: BLE001
                payload = {"error": describe_exception(exc)}
            send(event="case", id=case.id, **payload)
    send(event="done")


def run(job: dict, result_fd: int) -> None:
    """Isolate, fork the grading process, and (in the parent) mirror how it ended."""
    out = os.fdopen(result_fd, "w", buffering=1)

    def send(**event):
        out.write(json.dumps(event) + "\n")
        out.flush()

    isolation = isolate_namespaces()
    # orphans of the submission become our children, so none escapes _kill_descendants
    _libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    go_read, go_write = os.pipe()
    child = os.fork()
    if child:  # the parent: tell the grader whom to kill, then wait
        send(event="started", pid=child)
        os.close(go_write)
        out.close()
        status = os.waitpid(child, 0)[1]
        _kill_descendants()
        _mirror_exit(status)
    os.close(go_write)
    os.read(go_read, 1)  # wait until the parent has spoken, so lines never interleave
    os.close(go_read)
    grade(job, send, isolation)
    out.close()
    os._exit(0)  # skip interpreter teardown: nothing the student registered runs after


# --------------------------------------------------------------------------- fork server

# what the course's notebooks import; a package that is not installed is skipped
PRELOAD = ("numpy", "torch", "utils.plain", "utils.checks", "einops", "jaxtyping", "tqdm.auto",
           "matplotlib.pyplot", "scipy.linalg", "gensim", "gensim.test.utils", "pyarrow.parquet",
           "transformers", "utils.artifacts", "utils.activations")


def serve(control: int) -> None:
    """A fork server: import the heavy modules once, then fork one worker per request.

    Requests arrive on the ``control`` socket (SOCK_SEQPACKET) as JSON with two file
    descriptors: the job's read end and the result pipe's write end. The answer is the
    worker's pid; when a worker ends, its wait status follows. The server never runs
    student code itself: each child starts its own session, limits, isolation and job.
    """
    import resource
    import select
    import socket
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional package only costs speed
            pass
    sock = socket.socket(fileno=control)
    sock.sendall(b'{"ready": true}')
    children = set()
    while True:
        readable, _, _ = select.select([sock], [], [], 0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            children.discard(pid)
            sock.sendall(json.dumps({"exit": pid, "status": status}).encode())
        if not readable:
            continue
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
        if not message:  # the grader is gone: so are its workers
            for pid in children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.setsid()
            for limit, value in request["limits"].items():
                resource.setrlimit(getattr(resource, limit), (value, value))
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            with os.fdopen(fds[0], "rb") as job:
                run(json.loads(job.read()), fds[1])
            os._exit(0)
        children.add(pid)
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"pid": pid}).encode())


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    job = json.loads(sys.stdin.read())
    run(job, job["result_fd"])


if __name__ == "__main__":
    main()
