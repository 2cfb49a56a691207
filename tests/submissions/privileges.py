"""Item 1: what a submission could do with the grader's privileges. None of it may work.

normalize_rows reports what it observed in its error message (the report shows it);
tests/test_grader.py asserts the report. The grader's environment holds GRADER_SECRET.
"""
import ctypes
import fcntl
import glob
import os

FS_IOC_SETFLAGS = 0x40086602  # grading keeps constant assignments to a single name
FS_IMMUTABLE_FL = 0x10


def _outcome(attempt):
    try:
        attempt()
        return "done"
    except OSError as exc:
        return type(exc).__name__


def _capabilities():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return line.split()[1]


def _secret_seen():
    seen = "GRADER_SECRET" in os.environ
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            seen |= b"GRADER_SECRET" in open(path, "rb").read()
        except OSError:
            pass
    return seen


def _immutable_leftover():
    """A 60 MB file the grader's cleanup could not delete, if the flag could be set."""
    with open("leftover.bin", "wb") as f:
        f.write(b"\0" * (60 << 20))
        fcntl.ioctl(f.fileno(), FS_IOC_SETFLAGS, ctypes.c_int(FS_IMMUTABLE_FL))


def normalize_rows(E, eps=1e-8):
    facts = {
        "root": os.geteuid() == 0,
        "capabilities": _capabilities(),
        "shadow": _outcome(lambda: open("/etc/shadow").read(1)),
        "passwd": _outcome(lambda: open("/etc/passwd").read(1)),
        "secret": _secret_seen(),
        "processes": len(glob.glob("/proc/[0-9]*")),
        "fifo": _outcome(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))),
        "nice": _outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, -20)),
        "immutable": _outcome(_immutable_leftover),
    }
    raise RuntimeError("observed " + " ".join(f"{k}={v}" for k, v in facts.items()))
