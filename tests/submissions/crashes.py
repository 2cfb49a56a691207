"""Every way a process can die, one exercise each; the others must still be graded.

normalize_rows and project_onto_span are correct and must score.
"""
import ctypes
import os
import subprocess
import sys

import torch


def normalize_rows(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)


def cosine_similarity(A, B):
    while True:  # an infinite loop
        pass


def nearest_neighbours(E, query, k=10, exclude=()):
    sys.exit("nothing more to do")


def analogy_3cosadd(E, a, b, c, k=1, exclude_inputs=True):
    os._exit(3)


def analogy_3cosmul(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    return ctypes.string_at(0)  # a segmentation fault


def project_onto_span(v, basis):
    return torch.linalg.pinv(basis) @ (basis @ v)


def _outlive_grading(tag):
    """Start processes that try to survive: a new session, no environment, an orphan."""
    subprocess.Popen(["sleep", f"987.{tag}1"], start_new_session=True, env={})
    subprocess.Popen(["sh", "-c", f"sleep 987.{tag}2 &"], start_new_session=True, env={})
    return tag


def analogy_scores(cos_a, cos_b, cos_c, method, eps=1e-3):
    _outlive_grading(7)
    hoard = []
    while True:  # a memory blow-up (address space: no page is touched, the machine is spared)
        hoard.append(torch.empty(16 << 20))


def evaluate_analogies(E, words, questions_path, method="3cosadd", restrict_vocab=300_000,
                       case_insensitive=True, _started_at_definition=_outlive_grading(6)):
    raise NotImplementedError
