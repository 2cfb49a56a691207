"""The hidden checks can fail: every deliberately wrong implementation is caught, and
every correct implementation written differently from the reference passes.

"Caught" must hold on every machine, so a mutant counts as caught only when a check fails
it decisively: it raises, returns the wrong type, shape or indices, or misses the value
tolerance by at least ``MARGIN`` times (a judge's statistical tolerance by ``JUDGED_MARGIN``
times). A mutant caught by less could pass on a CPU, BLAS build or thread count that rounds
differently. Likewise a correct alternative must use at most ``HEADROOM`` of each value
tolerance. The whole suite runs under 1 and 2 torch threads.
``python benchmarks/check_margins.py`` prints each chapter's smallest margin.
"""

import importlib
import types

import pytest
import torch

from utils.checks import CHAPTERS, deviation, judge_case, load_suite, run_case

MARGIN = 100
JUDGED_MARGIN = 3
HEADROOM = 0.1


def variants():
    """Every registered variant: (chapter, Variant)."""
    for chapter in CHAPTERS:
        try:
            module = importlib.import_module(f"tests.mutants.{chapter}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tests.mutants.{chapter}":
                continue
            raise
        for variant in module.mutants.variants:
            yield chapter, variant


def outcomes(chapter, variant):
    """(case, the reference's outcome, the variant's outcome) for each case of its exercise."""
    suite = load_suite(chapter)
    reference = suite.reference()
    impl = types.SimpleNamespace(**{**vars(reference), variant.exercise: variant.implementation})
    cases = suite.cases_for(variant.exercise)
    assert cases, f"no checks for {variant.exercise}"
    return [(case, run_case(case, reference, 0), run_case(case, impl, 0)) for case in cases]


def verdicts(chapter, variant):
    """The verdict of each case of the variant's exercise."""
    return [judge_case(*found) for found in outcomes(chapter, variant)]


def headroom_used(chapter, variant) -> float:
    """The largest share of a value tolerance a (passing) variant uses, over its cases."""
    return max((deviation(expected.value, actual.value, case.rtol, case.atol)
                for case, expected, actual in outcomes(chapter, variant) if case.compare), default=0.0)


def decisive(verdict) -> bool:
    return not verdict.passed and verdict.margin >= (JUDGED_MARGIN if verdict.judged else MARGIN)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("chapter, variant", [
    pytest.param(chapter, variant, id=f"{chapter}/{'alternative' if variant.correct else 'mutant'}/"
                                      f"{variant.exercise}: {variant.description}")
    for chapter, variant in variants()])
def test_checks_tell_right_from_wrong(chapter, variant, threads):
    results = verdicts(chapter, variant)
    if variant.correct:
        failed = [v.message for v in results if not v.passed]
        assert not failed, f"a correct implementation fails: {failed}"
        used = headroom_used(chapter, variant)
        assert used <= HEADROOM, f"a correct implementation passes with only {1 - used:.0%} of the " \
            "tolerance to spare: another machine could fail it"
    else:
        assert any(not v.passed for v in results), f"no check catches the mistake '{variant.description}'"
        closest = max((v for v in results if not v.passed), key=lambda v: v.margin)
        assert any(decisive(v) for v in results), \
            f"'{variant.description}' is caught only by a margin of {closest.margin:.3g}: another " \
            f"machine could let it pass ({closest.message})"
