"""Limits that hold for a submission as a whole: memory, tasks, CPU share, scratch size.

Per-process limits (rlimits) let a submission multiply itself: six processes of 1 GB
each, files in memory that belong to no process, a CPU hog in each of ten sessions. So
every submission also gets one of these, by what the machine allows:

* ``Cgroup``: a cgroup of its own in each controller (v2, or v1's memory, pids and cpu
  hierarchies), made below the grader's own cgroup. The kernel then counts every page
  the submission's processes touch (tmpfs, /dev/shm and memfd files included) against
  ``memory``, every task against ``pids.max``, and gives all of them together at most
  ``cpus`` CPUs. It needs root, or a cgroup v2 subtree delegated to the grader's user.
* ``Watchdog`` where it does not: a thread samples the submission's process tree
  (proportional memory, files in memory, threads, CPU time, the scratch directory),
  kills the submission when it goes over a limit, and stops it for a while when it has
  used more than its share of CPU time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil

_V1 = {"memory": "memory", "pids": "pids", "cpu": "cpu"}  # controller -> v1 hierarchy mount option
_OUR_PARENT = f"grading-{os.getpid()}"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, options) of every cgroup hierarchy."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[dash + 1] in ("cgroup", "cgroup2"):
            found.append((fields[4], fields[dash + 1], set(fields[dash + 3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """The grader's own cgroup path in each hierarchy ("" for v2), from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


def _read_int(path: Path, key: str | None = None) -> int | None:
    """A number from a cgroup file: the whole file, or the value after ``key`` on its line."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        return int(text.split()[0]) if text.split() and text.split()[0].isdigit() else None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


class Cgroup:
    """One submission's cgroups: a directory per controller (one shared directory on v2)."""

    def __init__(self, version: int, directories: dict[str, Path]):
        self.version, self.directories = version, directories

    @classmethod
    def bases(cls) -> tuple[int, dict[str, Path]] | None:
        """Where this grader may make cgroups with memory, pids and cpu: (version, directories)."""
        own = _own_paths()
        mounts = _mounts()
        v1 = {c: Path(point) / own.get(c, "/").lstrip("/") / _OUR_PARENT for c in _V1
              for point, kind, options in mounts if kind == "cgroup" and _V1[c] in options}
        if len(v1) == len(_V1) and all(os.access(d.parent, os.W_OK) for d in v1.values()):
            return 1, v1
        for point, kind, _ in mounts:
            if kind != "cgroup2":
                continue
            base = Path(point) / own.get("", "/").lstrip("/")
            if cls._delegate(base):
                return 2, {c: base / _OUR_PARENT for c in _V1}
        return None

    @staticmethod
    def _delegate(base: Path) -> bool:
        """Enable memory, pids and cpu for cgroups below ``base`` (v2).

        A v2 cgroup with processes may not hand controllers down, so where ``base`` holds
        the grader itself, the grader first moves into a leaf below it (its limits stay).
        """
        try:
            if not {"memory", "pids", "cpu"} <= set((base / "cgroup.controllers").read_text().split()):
                return False
        except OSError:
            return False
        enable = "+memory +pids +cpu"
        if _write(base / "cgroup.subtree_control", enable):
            return True
        leaf = base / f"grader-{os.getpid()}"
        try:
            leaf.mkdir(exist_ok=True)
        except OSError:
            return False
        return _write(leaf / "cgroup.procs", str(os.getpid())) and _write(base / "cgroup.subtree_control", enable)

    @classmethod
    def create(cls, name: str, memory_mb: int, tasks: int, cpus: float) -> Cgroup | None:
        """A cgroup for one submission, with its limits set; None where the machine refuses."""
        found = _bases()
        if found is None:
            return None
        version, bases = found
        directories = {c: base / name for c, base in bases.items()}
        try:
            for directory in {*directories.values()}:
                directory.mkdir(parents=True)
        except OSError:
            return None
        group = cls(version, directories)
        memory = memory_mb << 20
        if version == 1:
            cpu = directories["cpu"]
            settings = [(directories["memory"] / "memory.limit_in_bytes", str(memory)),
                        (directories["memory"] / "memory.memsw.limit_in_bytes", str(memory)),
                        (directories["pids"] / "pids.max", str(tasks)),
                        (cpu / "cpu.cfs_quota_us", str(int(cpus * (_read_int(cpu / "cpu.cfs_period_us") or 100_000))))]
        else:
            directory = directories["memory"]
            settings = [(directory / "memory.max", str(memory)), (directory / "memory.swap.max", "0"),
                        (directory / "pids.max", str(tasks)), (directory / "cpu.max", f"{int(cpus * 100_000)} 100000")]
        required = [path for path, _ in settings if not path.name.startswith("memory.memsw")
                    and not path.name.startswith("memory.swap")]  # swap accounting may be off
        if not all([_write(path, value) or path not in required for path, value in settings]):
            group.remove()
            return None
        return group

    def describe(self, memory_mb: int, tasks: int, cpus: float) -> str:
        return f"cgroup v{self.version} ({memory_mb} MB memory with files in memory, {tasks} tasks, {cpus:g} CPU)"

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in {*self.directories.values()}]

    def memory_peak(self) -> int | None:
        memory = self.directories["memory"]
        return _read_int(memory / ("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"))

    def oom_kills(self) -> int:
        memory = self.directories["memory"]
        return _read_int(memory / ("memory.oom_control" if self.version == 1 else "memory.events"), "oom_kill") or 0

    def pids(self) -> list[int]:
        found = set()
        for procs in self.procs_files:
            try:
                found.update(int(p) for p in Path(procs).read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(found)

    def kill(self) -> None:
        """Kill every process in the cgroup, including those forked while it is being killed."""
        if self.version == 2 and _write(self.directories["memory"] / "cgroup.kill", "1"):
            return
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self) -> bool:
        """Remove the directories once their processes are gone; False if some remain."""
        deadline = time.monotonic() + 5
        for directory in {*self.directories.values()}:
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        return False
                    self.kill()
                    time.sleep(0.02)
        return True


_found_bases: list = []
_bases_lock = threading.Lock()


def _bases() -> tuple[int, dict[str, Path]] | None:
    """``Cgroup.bases()``, found once; the grader's parent cgroups go when it exits."""
    with _bases_lock:
        if not _found_bases:
            found = Cgroup.bases()
            _found_bases.append(found)
            if found is not None:
                atexit.register(_remove_parents, found[1])
        return _found_bases[0]


def _remove_parents(bases: dict[str, Path]) -> None:
    for directory in {*bases.values()}:
        try:
            directory.rmdir()
        except OSError:
            pass


# --------------------------------------------------------------------------- the watchdog


class Watchdog:
    """Samples one submission's process tree and enforces its limits where no cgroup can.

    ``reason`` says why it killed the submission (None while it has not): memory, tasks or
    scratch. ``peak_mb`` is the largest memory it measured: the proportional set size
    summed over the tree, plus files in memory (memfd) that no process maps.
    """

    INTERVAL = 0.05

    def __init__(self, root_pid: int, memory_mb: int, tasks: int, cpus: float, scratch: str, scratch_mb: int,
                 kill):
        self.root_pid, self.kill = root_pid, kill
        self.memory, self.tasks, self.cpus = memory_mb << 20, tasks, cpus
        self.scratch, self.scratch_bytes = scratch, scratch_mb << 20
        self.reason: str | None = None
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _measure(self, tree: list[psutil.Process]) -> tuple[int, int, float]:
        """Memory (bytes), tasks and CPU seconds of the tree."""
        memory, tasks, cpu = 0, 0, 0.0
        for process in tree:
            try:
                with process.oneshot():
                    memory += process.memory_full_info().pss + _unmapped_memfd_bytes(process.pid)
                    tasks += process.num_threads()
                    times = process.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        return memory, tasks, cpu

    def _watch(self) -> None:
        last_cpu, last_time, debt = 0.0, time.monotonic(), 0.0
        while not self._stop.wait(self.INTERVAL):
            tree = self._tree()
            if not tree:
                continue
            memory, tasks, cpu = self._measure(tree)
            self.peak_mb = max(self.peak_mb, memory / 2**20)
            over = "memory" if memory > self.memory else "tasks" if tasks > self.tasks else \
                "scratch" if _directory_bytes(self.scratch, self.scratch_bytes) > self.scratch_bytes else None
            if over:
                self.reason = over
                self.kill()
                return
            now = time.monotonic()
            debt = max(0.0, debt + (cpu - last_cpu) - self.cpus * (now - last_time))
            last_cpu, last_time = cpu, now
            if debt > 2 * self.INTERVAL:  # more than its share: stop it until the share catches up
                self._pause(tree, debt / self.cpus)
                debt, last_time = 0.0, time.monotonic()

    def _pause(self, tree: list[psutil.Process], seconds: float) -> None:
        for process in tree:
            try:
                process.send_signal(signal.SIGSTOP)
            except psutil.Error:
                continue
        self._stop.wait(seconds)
        for process in self._tree():
            try:
                process.send_signal(signal.SIGCONT)
            except psutil.Error:
                continue


def _unmapped_memfd_bytes(pid: int) -> int:
    """Bytes of in-memory files (memfd) open in a process; mapped ones also count in its PSS."""
    total = 0
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for entry in entries:
        try:
            if os.readlink(f"/proc/{pid}/fd/{entry}").startswith("/memfd:"):
                total += os.stat(f"/proc/{pid}/fd/{entry}").st_blocks * 512
        except OSError:
            continue
    return total


def _directory_bytes(directory: str, limit: int) -> int:
    """Disk used under ``directory`` (stops counting past ``limit``, or after 10,000 entries)."""
    total, seen = 0, 0
    for root, dirs, files in os.walk(directory):
        for name in files:
            seen += 1
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
            if total > limit or seen > 10_000:
                return limit + 1 if seen > 10_000 else total
    return total


def remove_tree(path: str) -> bool:
    """Delete a scratch directory; True if it is gone. Never raises: a cleanup that fails
    (a file the student made undeletable) leaves the directory behind, not an error."""
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)
