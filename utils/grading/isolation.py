"""Confining the student's process: who it runs as, what it sees, what it may touch.

The worker (``utils.grading.worker``) calls these before any student code runs, in this
order, each step best effort, and reports the ones the kernel granted:

1. ``join_cgroups``: the submission's cgroups (made by the grader, ``utils.grading.limits``).
2. ``enter_namespaces``: new mount, PID, network, IPC and UTS namespaces. A root worker
   makes them as root; otherwise (or where root may not) inside a new user namespace that
   maps only the worker's own user.
3. In the first process of the new PID namespace, ``private_mounts``: a /proc that shows
   only the submission's processes, a size-limited tmpfs as its scratch directory and
   /dev/shm (their pages count against the submission's memory cgroup), and, for a Python
   installed in a private home such as /root, that home replaced by one that shows only
   the installation.
4. ``become``: a root worker becomes a dedicated unprivileged user (one per job, never
   root, no supplementary groups). Capabilities go with it; ``drop_capabilities`` empties
   what a user namespace granted.
5. ``filesystem_rules`` and ``restrict_filesystem`` (Landlock): read only the Python installation, the course
   package and the system's libraries, write only the scratch directory; no TCP, no
   signals or abstract sockets reaching outside. ``PR_SET_NO_NEW_PRIVS`` comes with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_NAMESPACES = {CLONE_NEWNS: "mount", CLONE_NEWPID: "pid", CLONE_NEWNET: "network", CLONE_NEWIPC: "ipc",
               CLONE_NEWUTS: "uts"}
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 8192, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 24, 38, 36
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def join_cgroups(procs_files: list[str]) -> bool:
    """Move this process into each cgroup (its ``cgroup.procs`` file); True if all took it."""
    return all([_write(path, str(os.getpid())) for path in procs_files])


def enter_namespaces() -> list[str]:
    """Unshare what the kernel allows; the names of the namespaces entered.

    Root unshares plainly; anyone else (and root where it may not, e.g. in a container
    without CAP_SYS_ADMIN) inside a new user namespace mapping only its own user and group.
    """
    wanted = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    attempts = [wanted, CLONE_NEWPID | CLONE_NEWNET, CLONE_NEWNET]
    if os.geteuid() == 0:
        for flags in attempts:
            if _libc.unshare(ctypes.c_int(flags)) == 0:
                return [_NAMESPACES[f] for f in _NAMESPACES if flags & f]
        return []
    uid, gid = os.getuid(), os.getgid()
    for flags in attempts:
        if _libc.unshare(ctypes.c_int(flags | CLONE_NEWUSER)) == 0:
            mapped = _write("/proc/self/uid_map", f"{uid} {uid} 1") and _write("/proc/self/setgroups", "deny") \
                and _write("/proc/self/gid_map", f"{gid} {gid} 1")
            return ["user" if mapped else "user (unmapped)"] + [_NAMESPACES[f] for f in _NAMESPACES if flags & f]
    return []


def become(uid: int, gid: int) -> bool:
    """Root becomes ``uid``/``gid`` with no supplementary groups, keeping no capability."""
    if os.geteuid() != 0:
        return False
    _drop_bounding_set()  # needs CAP_SETPCAP, which setresuid takes away
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # leaving uid 0 clears the permitted and effective capabilities
    return os.getuid() == uid and not os.getresuid().count(0)


def _drop_bounding_set() -> None:
    for capability in range(64):
        _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def drop_capabilities() -> bool:
    """Empty every capability set (what a user namespace granted); True if none is left."""
    _drop_bounding_set()
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    _libc.capset(ctypes.byref(header), ctypes.byref(data))
    return effective_capabilities() == 0


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return -1


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    return _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       flags, data.encode() if data else None) == 0


def private_mounts(scratch: str, scratch_mb: int, uid: int, gid: int, readable: list[str]) -> list[str]:
    """In a new mount (and PID) namespace: a private /proc; a tmpfs owned by ``uid`` as the
    scratch directory and /dev/shm; and, where a readable path lies under a directory other
    users may not enter (a Python installed under /root), that directory replaced by an
    empty one that holds only the readable paths. Returns what was mounted.

    Mounts never propagate back to the machine's namespace; they vanish with it.
    """
    if not _mount("none", "/", None, MS_REC | MS_PRIVATE):
        return []
    done = _expose(readable, staging=scratch) if uid != os.getuid() else []
    if _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC):
        done.append("private /proc")
    owner = f"uid={uid},gid={gid}"
    if _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode=0700,{owner}"):
        done.append(f"tmpfs scratch ({scratch_mb} MB)")
        os.chdir(scratch)  # into the new file system, which hides the directory below it
    if os.path.isdir("/dev/shm") and _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                                            f"size={scratch_mb}m,mode=1777"):
        done.append("private /dev/shm")
    return done


def _private_ancestor(path: str) -> Path | None:
    """The outermost directory above ``path`` that users other than its owner may not enter."""
    return next((parent for parent in reversed(Path(path).parents) if not os.stat(parent).st_mode & 0o001), None)


def _expose(readable: list[str], staging: str) -> list[str]:
    """Replace each private directory above a readable path with a tmpfs holding only the
    readable paths below it (bind mounts), so a dedicated user can reach them by their own
    names, and nothing else in that directory."""
    hidden: dict[Path, list[str]] = {}
    for path in readable:
        top = _private_ancestor(path) if os.path.isdir(path) else None
        if top is not None and not any(path.startswith(kept + "/") for kept in hidden.get(top, [])):
            hidden.setdefault(top, []).append(path)
    done = []
    for top, paths in hidden.items():
        held = []
        for i, path in enumerate(sorted(paths)):  # held aside while the tmpfs covers their parent
            aside = os.path.join(staging, f".expose-{i}")
            os.mkdir(aside)
            if _mount(path, aside, None, MS_BIND | MS_REC):
                held.append((path, aside))
        if not _mount("tmpfs", str(top), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"):
            continue
        for path, aside in held:
            os.makedirs(path, exist_ok=True)
            _mount(aside, path, None, MS_MOVE)
            os.rmdir(aside)
        done.append(f"{top} hidden but for the Python installation")
    return done


def die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_subreaper() -> None:
    """Orphans of this process's descendants become its children (see ``kill_descendants``)."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_descendants() -> None:
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


# --------------------------------------------------------------------------- Landlock

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


def no_new_privileges() -> bool:
    return _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


def filesystem_rules(readable: list[str], writable: list[str]) -> tuple[int, int]:
    """A Landlock ruleset: read ``readable``, write ``writable``, nothing else.

    Also denies TCP (ABI 4+) and signals or abstract sockets reaching outside (ABI 6+).
    Made while the process can still open every path (before ``become``); enforced by
    ``restrict_filesystem``. Returns (ruleset fd, Landlock ABI), or (-1, 0) without Landlock.
    """
    abi = _libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return -1, 0
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | \
        (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(handled, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))
    if ruleset < 0:
        return -1, 0
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
    return ruleset, abi


def restrict_filesystem(ruleset: int, abi: int) -> int:
    """Enforce a ruleset of ``filesystem_rules`` on this process from now on; the ABI, or 0."""
    if ruleset < 0:
        return 0
    no_new_privileges()  # required to restrict oneself
    done = _libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    os.close(ruleset)
    return abi if done == 0 else 0
