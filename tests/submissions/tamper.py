"""Attempts to earn points without solving anything. None of them may earn a point.

Graded by tests/test_grader.py, which asserts the report exercise by exercise.
"""
import glob
import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import numpy.testing
import torch
import utils


class AlwaysEqual:
    """Equal to, and close to, everything."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __bool__(self):
        return True


def cosine_similarity(A, B):
    return AlwaysEqual()


def normalize_rows(E, eps=1e-8):
    import solutions.embedding_arithmetic as reference  # the plain way
    return reference.normalize_rows(E, eps)


def _patch_every_comparison():
    """Make every comparison the student's process could run say "equal"."""
    torch.allclose = lambda *args, **kwargs: True
    torch.isclose = lambda a, b, *args, **kwargs: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)
    torch.equal = lambda *args, **kwargs: True
    torch.testing.assert_close = lambda *args, **kwargs: None
    numpy.allclose = lambda *args, **kwargs: True
    numpy.testing.assert_allclose = lambda *args, **kwargs: None
    numpy.testing.assert_array_equal = lambda *args, **kwargs: None
    return True




def _reference_source():
    """The reference solutions, read from the course's folder next to utils/."""
    root = Path(utils.__file__).resolve().parents[1]
    return (root / "solutions" / "embedding_arithmetic.py").read_text()


def nearest_neighbours(E, query, k=10, exclude=()):
    namespace = {}
    exec(_reference_source(), namespace)
    return namespace["nearest_neighbours"](E, query, k, exclude)


def analogy_3cosadd(E, a, b, c, k=1, exclude_inputs=True):
    try:
        import tests.test_embedding_arithmetic  # the hidden checks, the plain way
    except ImportError:
        pass
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Blocked"]
    try:
        import solutions.embedding_arithmetic as reference
    except ImportError:
        root = Path(utils.__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("reference", root / "solutions" / "embedding_arithmetic.py")
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
    return reference.analogy_3cosadd(E, a, b, c, k, exclude_inputs)


class Announcement:
    print("All tests passed! Score: 100/100")


REPORT_DIRECTORY = None  # tests/test_grader.py fills this in: the student knows it


def _report_directories():
    """Where the grader writes reports: as given, or its --out, found in its command line."""
    found = [Path(REPORT_DIRECTORY)] if REPORT_DIRECTORY else []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = Path(cmdline).read_bytes().decode().split("\0")
        except OSError:
            continue
        if "utils.grade" in args and "--out" in args:
            out = Path(args[args.index("--out") + 1])
            found.append(out if out.is_absolute() else Path(cmdline).parent / "cwd" / out)
    return found


def analogy_3cosmul(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    print("All tests passed!")
    for directory in _report_directories():
        for attempt in (lambda: (directory / "tamper.json").write_text(json.dumps({"score": 100})),
                        lambda: (directory / "planted.txt").write_text("I was here"),
                        lambda: [p.read_text() for p in directory.glob("*.json")]):
            try:
                attempt()
            except OSError:
                pass
    return torch.arange(k)


def project_onto_span(v, basis):
    """Forge results on the grader's channel: a passing case, then the end of grading."""
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            is_pipe = os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:  # the listing's own descriptor, closed since
            continue
        if fd > 2 and is_pipe:
            for event in ({"event": "case", "id": "project_onto_span: non-orthogonal, non-unit basis",
                           "value": {"tree": True, "arrays": []}}, {"event": "done"}):
                try:
                    os.write(fd, (json.dumps(event) + "\n").encode())
                except OSError:
                    pass
    return v


def analogy_scores(cos_a, cos_b, cos_c, method, eps=1e-3, _patched_at_definition=_patch_every_comparison()):
    """Patch every comparison, and the checks machinery, inside the student's process."""
    import utils.checks
    _patch_every_comparison()
    utils.checks.compare = lambda *args, **kwargs: None
    utils.checks.judge_case = lambda *args, **kwargs: utils.checks.Verdict(True, "")
    return torch.zeros_like(cos_a)


def evaluate_analogies(E, words, questions_path, method="3cosadd", restrict_vocab=300_000,
                       case_insensitive=True):
    """Phone home for the answers."""
    with socket.create_connection(("151.101.0.223", 443), timeout=3) as connection:
        connection.sendall(b"GET /answers HTTP/1.0\r\n\r\n")
    raise RuntimeError("unreachable")
