"""The student's side of grading: a process that runs the submission's code, and no check.

``utils.grading.sandbox`` starts it (forked from the fork server, or as a fresh
interpreter: ``main``) with a plan: its user, cgroups, limits, scratch directory, and the
paths it may read. ``start`` confines it (``utils.grading.isolation``) and splits it in two:

* the worker itself, which made the namespaces: it tells the grader the pid of the second
  process, waits for it, kills whatever the submission left behind (it is a child
  subreaper, so orphans come to it), and ends the way the second process ended;
* the serving process, PID 1 of the new PID namespace (killing it kills every process the
  submission started): it mounts a private /proc and scratch, gives up its privileges,
  locks its file system view, says which layers are in force, then serves the grader's
  requests (``utils.grading.remote``) until the grader closes the channel.

The grader asks it to run the submission's statements, then to call the student's
functions with plain data; the checks themselves stay in the grader's process.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import os
import resource
import signal
import sys
import types

from utils.grading import isolation
from utils.grading.remote import STUDENT, Endpoint
from utils.grading.wire import PipeTransport


class _Blocked(importlib.abc.MetaPathFinder):
    """Refuses imports of the reference solutions and the hidden checks."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not available while grading)",
                                      name=fullname)
        return None


def _mirror_exit(status: int) -> None:
    """End this process the way the child ended (signal or exit code)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def start(plan: dict, read_fd: int, write_fd: int) -> None:
    """Confine this process, fork the serving process, and mirror how it ends. Never returns."""
    transport = PipeTransport(read_fd, write_fd, plan["max_bytes"])
    layers = ["cgroup"] if plan["cgroups"] and isolation.join_cgroups(plan["cgroups"]) else []
    for name, value in plan["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    was_root = os.geteuid() == 0
    namespaces = isolation.enter_namespaces()
    if was_root and not namespaces:  # e.g. a container that denies root's unshare: a user namespace then
        isolation.become(plan["uid"], plan["gid"])
        namespaces = isolation.enter_namespaces()
    layers += [f"{name} namespace" for name in namespaces]
    isolation.become_subreaper()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child:
        transport.send({"hello": child}, [])
        os.close(go_write)  # the serving process may speak now
        transport.close()
        if plan["uid"] is not None:
            isolation.become(plan["uid"], plan["gid"])
        status = os.waitpid(child, 0)[1]
        isolation.kill_descendants()
        _mirror_exit(status)
    os.close(go_write)
    os.read(go_read, 1)  # wait until the worker has spoken, so that messages never interleave
    os.close(go_read)
    # Imported here, not before unsharing: some of these start threads (OpenBLAS, pyarrow), and
    # the kernel refuses a user namespace to a process with threads (a fork server's child has
    # them imported already, without the threads).
    _preload()
    _serve(plan, transport, layers, "mount namespace" in layers and "pid namespace" in layers)


def _serve(plan: dict, transport: PipeTransport, layers: list[str], mounts: bool) -> None:
    isolation.die_with_parent()
    uid, gid = plan["uid"], plan["gid"]  # None: the grader is not root, so the worker stays who it is
    if mounts:
        layers += isolation.private_mounts(plan["scratch"], plan["scratch_mb"], os.getuid() if uid is None else uid,
                                           os.getgid() if gid is None else gid, plan["readable"])
    writable = plan["writable"] + (["/dev/shm"] if "private /dev/shm" in layers else [])
    rules = isolation.filesystem_rules(plan["readable"], writable)  # while every path opens
    if uid is not None:
        isolation.become(uid, gid)
        if os.getuid() == uid:
            layers.append("dedicated user (not root)")
    if isolation.drop_capabilities():
        layers.append("no capabilities")
    if uid is not None or "user namespace" in layers:  # then the count is the submission's own
        resource.setrlimit(resource.RLIMIT_NPROC, (plan["processes"], plan["processes"]))
        layers.append(f"at most {plan['processes']} tasks (RLIMIT_NPROC)")
    abi = isolation.restrict_filesystem(*rules)
    if isolation.no_new_privileges():
        layers.append("no_new_privs")
    if abi:
        layers.append(f"landlock (ABI {abi})")
    for name in plan["blocked"]:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    sys.meta_path.insert(0, _Blocked(plan["blocked"]))
    submission = types.ModuleType("__main__")
    sys.modules["__main__"] = submission
    transport.send({"ready": layers}, [])
    endpoint = Endpoint(transport, STUDENT, root=submission, files=0)
    while True:
        try:
            header, buffers = transport.receive()
        except EOFError:
            os._exit(0)  # the grader is done; skip teardown: nothing the student registered runs
        endpoint.serve(header, buffers)


# --------------------------------------------------------------------------- fork server

# what the course's notebooks import; a package that is not installed is skipped
PRELOAD = ("numpy", "torch", "utils.plain", "utils.checks", "einops", "jaxtyping", "tqdm.auto",
           "matplotlib.pyplot", "scipy.linalg", "gensim", "gensim.test.utils", "pyarrow.parquet",
           "transformers", "utils.artifacts", "utils.activations")


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional package only costs speed
            pass


def serve_forks(control: int) -> None:
    """A fork server: import the heavy modules once, then fork one worker per request.

    Requests arrive on the ``control`` socket (SOCK_SEQPACKET) as JSON (the worker's
    environment, scratch directory and plan) with two file descriptors: the ends of the
    worker's channel. The answer is the worker's pid; when a worker ends, its wait status
    follows. The server never runs student code: each child starts its own session,
    limits, isolation and plan.
    """
    import select
    import socket

    _preload()
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
        message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 2)
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
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            start(request["plan"], *fds)
        children.add(pid)
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"pid": pid}).encode())


def main(argv: list[str]) -> None:
    """A fork server (``--serve FD``) or one worker (its plan on stdin, ``READ_FD WRITE_FD``)."""
    if argv[:1] == ["--serve"]:
        serve_forks(int(argv[1]))
    start(json.loads(sys.stdin.read()), int(argv[0]), int(argv[1]))
