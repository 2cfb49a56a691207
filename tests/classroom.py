"""A simulated class of chapter 5 (binding), shared by tests/test_instructor.py and
tests/test_progress.py: notebooks with some exercises answered, rightly or wrongly.

Chapters 4 and 5 are the cheapest to grade, tied within the noise of a shared machine (the
solved notebook alone, two runs each on 2 cores: chapter 5 15.4 and 16.8 s wall, 4.6 s CPU;
4 16.4 and 15.4 s, 4.5 s CPU; 1 17-23 s; 2 18-23 s; 3 57-68 s). Chapter 5's exercises are
short functions with small, plausible mistakes, so it is the one simulated here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat

from utils import notebooks

STEM, CHAPTER = "5_binding", "binding"
REFERENCE = notebooks.definitions(importlib.import_module(f"solutions.{CHAPTER}"))

# A learner who got some exercises right (one in their own words), and two wrong in ways the
# checks name: unbinding with T @ role (columns, not rows), and mean pooling over the padding.
PARTIAL = {
    "bag_of_features": REFERENCE["bag_of_features"],
    "tensor_product_bind": '''\
def tensor_product_bind(roles, fillers):
    if roles.ndim != 2 or fillers.ndim != 2 or roles.shape[0] != fillers.shape[0]:
        raise ValueError("need as many roles as fillers")
    return roles.T @ fillers''',
    "tensor_product_unbind": '''\
def tensor_product_unbind(T, role):
    if role.shape[0] != T.shape[0]:
        raise ValueError("role has the wrong size")
    return T @ role''',
    "mean_pool": '''\
def mean_pool(hidden, attention_mask):
    return hidden.mean(1)''',
}
PARTIAL_RIGHT, PARTIAL_WRONG = ["bag_of_features", "tensor_product_bind"], ["tensor_product_unbind", "mean_pool"]

# A learner whose code attacks the grader: it exits the process, prints megabytes, and
# loops forever; one exercise is right, so a report must still give its point.
HOSTILE = {
    "bag_of_features": '''\
def bag_of_features(scenes, colour_vecs, shape_vecs):
    import sys
    sys.exit(0)''',
    "tensor_product_bind": '''\
def tensor_product_bind(roles, fillers):
    print("spam " * 2_000_000)
    return roles.T @ fillers''',
    "tensor_product_unbind": REFERENCE["tensor_product_unbind"],
    "mean_pool": '''\
def mean_pool(hidden, attention_mask):
    while True:
        pass''',
}


def answered(notebook: Path, answers: dict[str, str]) -> str:
    """``notebook`` (a release) with the code cells of the exercises in ``answers`` replaced,
    as a learner types them into the stub's cell."""
    node = nbformat.read(notebook, as_version=4)
    for cell in node.cells:
        if cell.cell_type == "code" and cell.metadata.get("exercise") in answers:
            cell.source = answers[cell.metadata["exercise"]]
    return nbformat.writes(node)
