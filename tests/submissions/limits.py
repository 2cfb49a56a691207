"""Item 2: limits hold for the submission as a whole, not per process.

Each function tries once (per process) to take more than the grader's limits allow, with
several processes, files in memory, threads or files, and reports what it got in its
error message when it is still alive to do so. tests/test_grader.py grades it with
--memory 1024.
"""
import mmap
import os
import signal
import time

import numpy as np

MB = 1048576  # a literal: grading keeps only constant assignments
OBSERVED = {}  # what each function saw the first time: later cases see the same


def _once(attempt):
    """Run ``attempt`` the first time only; every call raises what it observed."""
    if attempt.__name__ not in OBSERVED:
        OBSERVED[attempt.__name__] = attempt()
    raise RuntimeError(f"observed {OBSERVED[attempt.__name__]}")


def _stop(children):
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _children_holding_memory():
    """Six processes that each touch 400 MB: more than 1024 MB together."""
    ready, told = os.pipe()
    children = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            block = np.ones(400 * MB // 8)
            os.write(told, b"1")
            time.sleep(60 + block[0])
            os._exit(0)
        children.append(pid)
    os.close(told)
    os.set_blocking(ready, False)
    allocated, ended, deadline = 0, [], time.monotonic() + 8
    while allocated + len(ended) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            allocated += len(os.read(ready, 6))
        except BlockingIOError:
            pass
        ended = [pid for pid in children if pid in ended or os.waitpid(pid, os.WNOHANG)[0]]
    _stop([pid for pid in children if pid not in ended])
    return f"allocated={allocated} killed_by_the_limit={len(ended)}"


def _files_in_memory():
    """2400 MB in memfd files, in no process's address space."""
    written = 0
    try:
        for _ in range(24):
            fd = os.memfd_create("hoard")
            os.write(fd, b"\1" * (100 * MB))
            written += 100
    except OSError as exc:
        return f"memfd_mb={written} ({type(exc).__name__})"
    return f"memfd_mb={written}"


def _many_processes():
    """As many processes at once as the machine lets it have (up to 300)."""
    children = []
    try:
        while len(children) < 300:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
    except OSError:
        pass
    _stop(children)
    return f"processes={len(children)}"


def _scratch_files():
    """1500 MB of scratch files, none of them larger than the file size limit."""
    written = 0
    try:
        for i in range(15):
            with open(f"fill{i}.bin", "wb") as f:
                for _ in range(10):
                    f.write(b"\1" * (10 * MB))
                    written += 10
    except OSError as exc:
        return f"scratch_mb={written} ({type(exc).__name__})"
    return f"scratch_mb={written}"


def _busy_sessions():
    """Eight busy processes, each in its own session, for three seconds: their CPU share."""
    start = time.monotonic()
    children = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            while time.monotonic() < start + 3:
                pass
            os._exit(0)
        children.append(pid)
    used = 0.0
    for pid in children:
        usage = os.wait4(pid, 0)[2]
        used += usage.ru_utime + usage.ru_stime
    return f"cpu_share={used / (time.monotonic() - start):.2f}"


def _shared_mapping():
    """2000 MB in a shared mapping that no single process owns."""
    shared = mmap.mmap(-1, 2000 * MB)
    for offset in range(0, 2000 * MB, 4096):
        shared[offset] = 1
    return "shared_mb=2000"


def normalize_rows(E, eps=1e-8):
    _once(_children_holding_memory)


def cosine_similarity(A, B):
    _once(_files_in_memory)


def nearest_neighbours(E, query, k=10, exclude=()):
    _once(_many_processes)


def analogy_3cosadd(E, a, b, c, k=1, exclude_inputs=True):
    _once(_scratch_files)


def analogy_3cosmul(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    _once(_busy_sessions)


def project_onto_span(v, basis):
    _once(_shared_mapping)
