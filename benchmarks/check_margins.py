"""How decisively the hidden checks catch each chapter's wrong implementations.

    python benchmarks/check_margins.py

For every mutant in ``tests/mutants/``, its margin is the largest factor by which one of its
exercise's checks misses (``utils.checks.Mismatch``; inf for an error, a wrong type, shape or
index). The table gives each chapter's smallest margin, under 1 and 2 torch threads, and the
mutant it belongs to, and the largest share of a value tolerance a correct alternative uses.
``tests/test_mutants.py`` requires a margin of at least 100 (3 for a judge's statistical
tolerance) and at most 10% of a tolerance used.
"""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_mutants import headroom_used, variants, verdicts  # noqa: E402


def closest_calls(threads: int) -> dict[str, dict[str, tuple[float, str]]]:
    """Per chapter: the smallest margin of a mutant, the most tolerance an alternative uses."""
    torch.set_num_threads(threads)
    found: dict[str, dict[str, tuple[float, str]]] = {}
    for chapter, variant in variants():
        name = f"{variant.exercise}: {variant.description}"
        rows = found.setdefault(chapter, {"mutant": (math.inf, ""), "alternative": (0.0, "")})
        if variant.correct:
            used = headroom_used(chapter, variant)
            rows["alternative"] = max(rows["alternative"], (used, name))
        else:
            margin = max((v.margin for v in verdicts(chapter, variant) if not v.passed), default=0.0)
            rows["mutant"] = min(rows["mutant"], (margin, name))
    return found


def main() -> None:
    runs = {threads: closest_calls(threads) for threads in (1, 2)}
    print("smallest margin of a mutant (x its tolerance) | most tolerance an alternative uses")
    print(f"{'chapter':22} {'1 thread':>9} {'2 threads':>9} {'1 thread':>9} {'2 threads':>9}  closest mutant")
    for chapter, rows in runs[1].items():
        other = runs[2][chapter]
        print(f"{chapter:22} {rows['mutant'][0]:9.3g} {other['mutant'][0]:9.3g} "
              f"{rows['alternative'][0]:9.2%} {other['alternative'][0]:9.2%}  {rows['mutant'][1]}")


if __name__ == "__main__":
    main()
