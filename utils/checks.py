"""Hidden checks: "same program, two implementations".

A check case is a small program ``program(impl, seed) -> plain data`` that builds its own
inputs from ``seed`` and calls functions of ``impl`` (the reference module, or a student's
namespace). A case passes when the student's plain result matches the reference's, and
when every property ("judge") the case declares holds for the student's result.

The same cases serve three callers:

* ``check(fn)`` in a notebook: both implementations run in the notebook's kernel;
* ``pytest`` (``tests/test_<chapter>.py``): the reference, or ``--submission PATH``;
* the grader (``python -m utils.grade``): the student's side runs in a sandboxed process
  and only plain data comes back (see ``utils.plain`` and ``utils.sandbox``).
"""

from __future__ import annotations

import importlib
import math
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from utils.plain import NotPlainData, to_plain

CHAPTERS = (
    "embedding_arithmetic",
    "probing",
    "superposition",
    "saes",
    "binding",
)

Program = Callable[[Any, int], Any]
Judge = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Case:
    """One check of one exercise."""

    exercise: str  # the function or class under test
    name: str  # what is checked, shown to the student
    program: Program
    mistake: str  # the likely mistake, shown when the case fails
    judges: tuple[Judge, ...] = ()
    rtol: float = 1e-4
    atol: float = 1e-5
    compare: bool = True  # False: only the judges decide (e.g. samplers)

    @property
    def id(self) -> str:
        return f"{self.exercise}: {self.name}"


@dataclass
class Suite:
    """All the hidden checks of one chapter, in the order the notebook meets them."""

    chapter: str
    cases: list[Case] = field(default_factory=list)
    points: dict[str, float] = field(default_factory=dict)

    def case(self, exercise: str, name: str, mistake: str, *, judges=(), rtol=1e-4,
             atol=1e-5, compare=True):
        """Decorator: register ``program(impl, seed)`` as a check of ``exercise``."""

        def register(program: Program) -> Program:
            self.cases.append(Case(exercise, name, program, mistake, tuple(judges), rtol,
                                   atol, compare))
            return program

        return register

    @property
    def exercises(self) -> list[str]:
        return list(dict.fromkeys(c.exercise for c in self.cases))

    def cases_for(self, exercise: str) -> list[Case]:
        return [c for c in self.cases if c.exercise == exercise]

    def reference(self) -> types.ModuleType:
        return importlib.import_module(f"solutions.{self.chapter}")

    def pytest_function(self):
        """A pytest test parametrised over every case (see ``conftest.py``)."""
        import pytest

        suite = self

        @pytest.mark.parametrize("case", self.cases, ids=[c.id for c in self.cases])
        def test_hidden_check(case: Case, submission_outcomes):
            expected = run_case(case, suite.reference(), seed=0)
            assert expected.error is None, f"the reference fails its own check: {expected.error}"
            if submission_outcomes is None:
                actual = run_case(case, suite.reference(), seed=0)
            else:
                if case.id not in submission_outcomes:
                    pytest.fail(f"{case.exercise} was not graded (not found in the submission?)")
                actual = submission_outcomes[case.id]
            verdict = judge_case(case, expected, actual)
            assert verdict.passed, verdict.message

        return test_hidden_check


def load_suite(chapter: str) -> Suite:
    """The hidden checks of a chapter (``tests/test_<chapter>.py``)."""
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; expected one of {', '.join(CHAPTERS)}")
    return importlib.import_module(f"tests.test_{chapter}").suite


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What one implementation produced for one case: plain data, or an error message."""

    value: Any = None
    error: str | None = None


_COURSE_INTERNALS = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests"))


def describe_exception(exc: BaseException) -> str:
    """``Type: message``, plus where in the student's own code it was raised."""
    if isinstance(exc, NotImplementedError) and not str(exc):
        return "not implemented yet (the stub still raises NotImplementedError)"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_COURSE_INTERNALS) and "site-packages" not in f.filename
              and "/lib/python" not in f.filename]
    where = f" (at {frames[-1].filename}, line {frames[-1].lineno}: {frames[-1].line})" \
        if frames else ""
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}"


def run_case(case: Case, impl: Any, seed: int) -> Outcome:
    """Run one case's program on ``impl``; exceptions become an error message."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Outcome(value=to_plain(case.program(impl, seed)))
    except NotPlainData as exc:
        return Outcome(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - any student error is a result, not a crash
        return Outcome(error=describe_exception(exc))


# --------------------------------------------------------------------------- comparing


def compare(expected: Any, actual: Any, rtol: float, atol: float, where: str = "the result") -> str | None:
    """Describe the first way ``actual`` differs from ``expected``, or None if they match.

    The description never contains expected values, only shapes, types and error sizes.
    """
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        if not isinstance(actual, (torch.Tensor, np.ndarray)):
            return f"{where} should be a tensor, not {type(actual).__name__}"
        e = torch.as_tensor(expected)
        a = torch.as_tensor(actual)
        if tuple(a.shape) != tuple(e.shape):
            return f"{where} has shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        if e.dtype == torch.bool or not (e.is_floating_point() or e.is_complex()):
            if a.is_floating_point():
                return f"{where} should hold integers (indices or counts), not {a.dtype}"
            wrong = (a.long() != e.long()).sum().item()
            return f"{wrong} of {e.numel()} entries of {where} are wrong" if wrong else None
        a = a.to(torch.float64)
        e = e.to(torch.float64)
        if torch.isnan(a).any() and not torch.isnan(e).any():
            return f"{where} contains NaN"
        close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return None
        gap = (a - e).abs().nan_to_num(nan=math.inf).max().item()
        return (f"{(~close).sum().item()} of {e.numel()} entries of {where} are off "
                f"(largest difference {gap:.3g})")
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if type(actual) is type(expected) and actual == expected else \
            f"{where} is wrong (got {_short(actual)})"
    if isinstance(expected, (int, float)):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return f"{where} should be a number, not {type(actual).__name__}"
        if isinstance(expected, int) and isinstance(actual, int):
            return None if actual == expected else f"{where} is wrong (got {actual})"
        ok = math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol) or \
            (math.isnan(actual) and math.isnan(expected))
        return None if ok else f"{where} is off (got {actual:.6g})"
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return f"{where} should be a sequence, not {type(actual).__name__}"
        if len(actual) != len(expected):
            return f"{where} has {len(actual)} items, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = compare(e, a, rtol, atol, f"item {i} of {where}")
            if found:
                return found
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where} should be a dict, not {type(actual).__name__}"
        if set(actual) != set(expected):
            missing = sorted(set(expected) - set(actual), key=str)
            extra = sorted(set(actual) - set(expected), key=str)
            return f"{where} has the wrong keys (missing {missing}, unexpected {extra})"
        for key in expected:
            found = compare(expected[key], actual[key], rtol, atol, f"{where}[{key!r}]")
            if found:
                return found
        return None
    raise TypeError(f"cannot compare reference data of type {type(expected).__name__}")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."


@dataclass
class Verdict:
    passed: bool
    message: str  # empty when passed


def judge_case(case: Case, expected: Outcome, actual: Outcome) -> Verdict:
    """Pass or fail one case, with a message that names the likely mistake."""
    if expected.error is not None:
        return Verdict(False, f"internal error: the reference failed ({expected.error})")
    if actual.error is not None:
        return Verdict(False, actual.error)
    problems = []
    if case.compare:
        found = compare(expected.value, actual.value, case.rtol, case.atol)
        if found:
            problems.append(found)
    if not problems:
        for judge in case.judges:
            try:
                found = judge(actual.value)
            except Exception as exc:  # noqa: BLE001 - malformed data fails the judge
                found = f"the result could not be checked ({type(exc).__name__}: {exc})"
            if found:
                problems.append(found)
                break
    if not problems:
        return Verdict(True, "")
    return Verdict(False, f"{problems[0]}. Likely mistake: {case.mistake}")


# --------------------------------------------------------------------------- notebooks


def _implementation_of(obj: Any) -> types.SimpleNamespace:
    """The student's namespace: everything ``obj`` can see, with ``obj`` itself on top."""
    module_globals = getattr(obj, "__globals__", None)
    if module_globals is None:  # a class: its module's namespace (the notebook's __main__)
        module_globals = vars(sys.modules.get(obj.__module__, types.ModuleType("empty")))
    return types.SimpleNamespace(**{**module_globals, obj.__name__: obj})


def check(obj: Any, chapter: str | None = None) -> None:
    """Run the hidden checks of one exercise on ``obj`` and print one line per case.

    Use in a notebook, right under the exercise: ``check(normalize_rows)``.
    """
    name = getattr(obj, "__name__", None)
    if name is None:
        raise TypeError(f"check() takes the function or class you wrote, not {type(obj).__name__}")
    chapters = [chapter] if chapter else CHAPTERS
    suite = next((s for s in map(_try_load_suite, chapters) if s and s.cases_for(name)), None)
    if suite is None:
        print(f"There are no checks for {name!r}: is the name spelled as in the exercise?")
        return
    reference = suite.reference()
    passed = 0
    cases = suite.cases_for(name)
    for case in cases:
        verdict = judge_case(case, run_case(case, reference, 0), run_case(case, _implementation_of(obj), 0))
        if not verdict.passed:
            print(f"✗ {case.name}: {verdict.message}")
            print(f"{name}: {passed} of {len(cases)} checks passed before this one.")
            return
        print(f"✓ {case.name}")
        passed += 1
    print(f"{name}: all {len(cases)} checks passed.")


def _try_load_suite(chapter: str) -> Suite | None:
    """A chapter's suite, or None if it has none (or another chapter's checks are broken)."""
    try:
        return load_suite(chapter)
    except Exception:  # noqa: BLE001 - one chapter's checks must not break another's
        return None
