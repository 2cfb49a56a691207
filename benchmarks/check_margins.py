"""How decisively the hidden checks catch each chapter's wrong implementations.

    python benchmarks/check_margins.py

For every mutant in ``tests/mutants/``, its margin is the largest factor by which one of its
exercise's checks misses (``utils.checks.Mismatch``; inf for an error, a wrong type, shape or
index). The table gives each chapter's smallest margin, under 1 and 2 torch threads, and the
mutant it belongs to. ``tests/test_mutants.py`` requires at least 100 (3 for a judge's
statistical tolerance).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_mutants import variants, verdicts  # noqa: E402


def smallest_margins(threads: int) -> dict[str, tuple[float, str]]:
    torch.set_num_threads(threads)
    smallest: dict[str, tuple[float, str]] = {}
    for chapter, variant in variants():
        if variant.correct:
            continue
        margin = max((v.margin for v in verdicts(chapter, variant) if not v.passed), default=0.0)
        if chapter not in smallest or margin < smallest[chapter][0]:
            smallest[chapter] = (margin, f"{variant.exercise}: {variant.description}")
    return smallest


def main() -> None:
    rows = {threads: smallest_margins(threads) for threads in (1, 2)}
    print(f"{'chapter':22} {'1 thread':>10} {'2 threads':>10}  closest mutant")
    for chapter, (margin, name) in rows[1].items():
        print(f"{chapter:22} {margin:10.3g} {rows[2][chapter][0]:10.3g}  {name}")


if __name__ == "__main__":
    main()
