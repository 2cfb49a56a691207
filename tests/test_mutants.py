"""The hidden checks can fail: every deliberately wrong implementation is caught, and
every correct implementation written differently from the reference passes."""

import importlib
import types

import pytest

from utils.checks import CHAPTERS, judge_case, load_suite, run_case


def _variants():
    for chapter in CHAPTERS:
        try:
            module = importlib.import_module(f"tests.mutants.{chapter}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tests.mutants.{chapter}":
                continue
            raise
        for variant in module.mutants.variants:
            kind = "alternative" if variant.correct else "mutant"
            yield pytest.param(chapter, variant, id=f"{chapter}/{kind}/{variant.exercise}: {variant.description}")


def verdicts(chapter, variant):
    """Each case of the variant's exercise: (case name, passed, message)."""
    suite = load_suite(chapter)
    reference = suite.reference()
    impl = types.SimpleNamespace(**{**vars(reference), variant.exercise: variant.implementation})
    cases = suite.cases_for(variant.exercise)
    assert cases, f"no checks for {variant.exercise}"
    return [(case.name, *vars(judge_case(case, run_case(case, reference, 0), run_case(case, impl, 0))).values())
            for case in cases]


@pytest.mark.parametrize("chapter, variant", list(_variants()))
def test_checks_tell_right_from_wrong(chapter, variant):
    results = verdicts(chapter, variant)
    if variant.correct:
        failed = [f"{name}: {message}" for name, passed, message in results if not passed]
        assert not failed, f"a correct implementation fails: {failed}"
    else:
        assert not all(passed for _, passed, _ in results), \
            f"no check catches the mistake '{variant.description}'"
