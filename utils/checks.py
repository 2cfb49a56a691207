"""Hidden checks: "same program, two implementations".

A check case is a small program ``program(impl, seed) -> plain data`` that builds its own
inputs from ``seed`` and calls functions of ``impl`` (the reference module, or a student's
namespace). A case passes when the student's plain result matches the reference's, and
when every property ("judge") the case declares holds for the student's result.

The same cases serve three callers:

* ``check(fn)`` in a notebook: both implementations run in the notebook's kernel;
* ``pytest`` (``tests/test_<chapter>.py``): the reference, or ``--submission PATH``;
* the grader (``python -m utils.grade``): the case runs in the grader's process and the
  student's code in a sandboxed one, reached through proxies (``utils.grading.remote``).

In all three the program meets the implementation through the same proxies and copies,
so it sees the same things: what a case may and may not do is in ``utils.grading``'s
docstring. In short: plain data in and out, ``gradients(...)`` for autograd through the
student's code, generators for randomness, and arguments that stay as they were.
"""

from __future__ import annotations

import importlib
import math
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from utils.grading.remote import Endpoint, RemoteError, begin, in_student_process, local_session
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


class Mismatch(str):
    """Why a result fails a check, and by how much: ``margin`` is how many times its allowed
    deviation the result misses by (``inf`` for what no tolerance can fix: an error, a wrong
    type, shape, index or key). A judge may return a plain ``str``: that counts as ``inf``.

    The margin is what makes a verdict portable: a wrong answer caught by a wide margin is
    caught on every CPU, BLAS build and thread count (``tests/test_mutants.py``).
    """

    margin: float
    form: bool  # the result has the wrong type, shape or keys (not merely wrong values)

    def __new__(cls, message: str, margin: float = math.inf, form: bool = False) -> "Mismatch":
        found = super().__new__(cls, message)
        found.margin, found.form = margin, form
        return found


def margin_of(problem: str) -> float:
    return getattr(problem, "margin", math.inf)


def beyond(measured: float, target: float, tolerance: float, message: str) -> Mismatch | None:
    """A judge's test of a statistic: fails when ``|measured - target| > tolerance``."""
    gap = abs(measured - target)
    return Mismatch(message, gap / tolerance) if not gap <= tolerance else None


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
    changes_arguments: bool = False  # True: the calls may change their arguments in place (hooks)

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
             atol=1e-5, compare=True, changes_arguments=False):
        """Decorator: register ``program(impl, seed)`` as a check of ``exercise``."""

        def register(program: Program) -> Program:
            self.cases.append(Case(exercise, name, program, mistake, tuple(judges), rtol,
                                   atol, compare, changes_arguments))
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
        def test_hidden_check(case: Case, submission_run):
            expected = run_case(case, suite.reference(), seed=0)
            assert expected.error is None, f"the reference fails its own check: {expected.error}"
            if submission_run is None:
                verdict = judge_case(case, expected, run_case(case, suite.reference(), seed=0))
            else:
                exercise = submission_run.exercises[case.exercise]
                verdict = exercise.verdicts.get(case.id)
                if verdict is None:
                    pytest.fail(f"{case.exercise} was not graded: {exercise.message or 'its process stopped first'}")
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
    """What one implementation produced for one case: plain data, or an error message, and
    the side effects its calls had on their arguments (see ``utils.grading.remote``)."""

    value: Any = None
    error: str | None = None
    side_effects: tuple[str, ...] = ()
    answer_bytes: int = 0  # the data in the largest answer of the implementation's calls


_COURSE_INTERNALS = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests"))


def describe_exception(exc: BaseException) -> str:
    """``Type: message``, plus where in the student's own code it was raised.

    Two causes get plain words: a stub that still raises ``NotImplementedError`` (named, since
    it may be an earlier exercise this one calls), and a result the check itself could not
    use (the exception arose in the check's code, not the student's).
    """
    if isinstance(exc, RemoteError):  # described where it happened, in the student's process
        return exc.description or f"{type(exc).__name__}: {str(exc)[:300]}"
    ours = [f for f in traceback.extract_tb(exc.__traceback__)  # not torch's, not Python's
            if "site-packages" not in f.filename and "/lib/python" not in f.filename]
    frames = [f for f in ours if not f.filename.startswith(_COURSE_INTERNALS)]
    if isinstance(exc, NotImplementedError) and not str(exc):
        stub = f"{frames[-1].name} is" if frames and frames[-1].name != "<module>" else "this is"
        return f"not implemented yet: {stub} still the stub that raises NotImplementedError"
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if ours and ours[-1].filename.startswith(_COURSE_INTERNALS[1]):
        return f"the check could not use what your code returned ({type(exc).__name__}: {message}): {FORM_HINT}"
    where = f" (at {frames[-1].filename}, line {frames[-1].lineno}: {frames[-1].line})" \
        if frames else ""
    return f"{type(exc).__name__}: {message}{where}"


def run_case(case: Case, implementation: Any, seed: int, answer_limit: int | None = None) -> Outcome:
    """Run one case's program; exceptions become an error message.

    ``implementation`` is a module or namespace (the reference, a notebook's definitions),
    which then runs in this process behind a ``local_session``, or the grader's
    ``Endpoint`` to a student's sandboxed process. Either way the program sees the same
    proxies and copies, so both give the same outcome. ``answer_limit`` bounds the data
    one answer of the implementation may hold. ``WorkerLost`` is not caught.
    """
    endpoint = implementation if isinstance(implementation, Endpoint) else local_session(implementation)
    value, error = None, None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            impl = begin(endpoint, seed, answer_limit)
            value = to_plain(case.program(impl, seed))
    except NotPlainData as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - any student error is a result, not a crash
        error = describe_exception(exc)
    return Outcome(value, error, tuple(endpoint.side_effects), endpoint.largest_answer)


@in_student_process
def gradients(function: Any, *args, wrt: Sequence[int | str], powers: int | tuple[int, ...] = 2,
              **kwargs) -> tuple[torch.Tensor | None, ...]:
    """The gradients of Σ_k sum(output_k ** powers[k]) of ``function(*args, **kwargs)``.

    For a check of "gradients reach W": autograd through the student's code must run in
    the student's process, so this helper runs there. Each entry of ``wrt`` is the position
    of an argument (a tensor, made a leaf that requires grad) or the name of an attribute
    of ``function`` (a model's parameter). ``powers`` is one exponent for every output or
    one per output of a tuple (0 leaves an output out). Returns one gradient per ``wrt``
    entry, None where none reaches it (as ``.grad`` would be after ``backward()``).
    """
    args = [a.detach().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    inputs = [args[w] if isinstance(w, int) else getattr(function, w) for w in wrt]
    outputs = function(*args, **kwargs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    powers = powers if isinstance(powers, tuple) else (powers,) * len(outputs)
    loss = sum((output ** power).sum() for output, power in zip(outputs, powers) if power)
    reached = [isinstance(t, torch.Tensor) and t.requires_grad for t in inputs]
    found = iter(torch.autograd.grad(loss, [t for t, r in zip(inputs, reached) if r], allow_unused=True))
    return tuple(next(found) if r else None for r in reached)


# --------------------------------------------------------------------------- comparing


def compare(expected: Any, actual: Any, rtol: float, atol: float, where: str = "the result") -> Mismatch | None:
    """Describe the first way ``actual`` differs from ``expected``, or None if they match.

    The description never contains expected values, only shapes, types and error sizes. Its
    ``margin`` is max |actual - expected| / (atol + rtol·|expected|) over the entries.
    """
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        if not isinstance(actual, (torch.Tensor, np.ndarray)):
            return Mismatch(f"{where} should be a tensor, not {type(actual).__name__}", form=True)
        e = torch.as_tensor(expected)
        a = torch.as_tensor(actual)
        if tuple(a.shape) != tuple(e.shape):
            return Mismatch(f"{where} has shape {tuple(a.shape)}, expected {tuple(e.shape)}", form=True)
        if e.dtype == torch.bool or not (e.is_floating_point() or e.is_complex()):
            if a.is_floating_point():
                return Mismatch(f"{where} should hold integers (indices or counts), not {a.dtype}", form=True)
            wrong = (a.long() != e.long()).sum().item()
            return Mismatch(f"{wrong} of {e.numel()} entries of {where} are wrong") if wrong else None
        a = a.to(torch.float64)
        e = e.to(torch.float64)
        if torch.isnan(a).any() and not torch.isnan(e).any():
            return Mismatch(f"{where} contains NaN")
        close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return None
        gaps = (a - e).abs().nan_to_num(nan=math.inf)
        margin = (gaps / (atol + rtol * e.abs())).max().item()
        return Mismatch(f"{(~close).sum().item()} of {e.numel()} entries of {where} are off "
                        f"(largest difference {gaps.max().item():.3g})", margin)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if type(actual) is type(expected) and actual == expected else \
            Mismatch(f"{where} is wrong (got {_short(actual)})")
    if isinstance(expected, (int, float)):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return Mismatch(f"{where} should be a number, not {type(actual).__name__}", form=True)
        if isinstance(expected, int) and isinstance(actual, int):
            return None if actual == expected else Mismatch(f"{where} is wrong (got {actual})")
        if math.isnan(actual) and math.isnan(expected):
            return None
        margin = abs(actual - expected) / (atol + rtol * abs(expected))
        return None if margin <= 1 else Mismatch(f"{where} is off (got {actual:.6g})", margin)
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return Mismatch(f"{where} should be a sequence, not {type(actual).__name__}", form=True)
        if len(actual) != len(expected):
            return Mismatch(f"{where} has {len(actual)} items, expected {len(expected)}", form=True)
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = compare(e, a, rtol, atol, f"item {i} of {where}")
            if found:
                return found
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return Mismatch(f"{where} should be a dict, not {type(actual).__name__}", form=True)
        if set(actual) != set(expected):
            missing = sorted(set(expected) - set(actual), key=str)
            extra = sorted(set(actual) - set(expected), key=str)
            return Mismatch(f"{where} has the wrong keys (missing {missing}, unexpected {extra})", form=True)
        for key in expected:
            found = compare(expected[key], actual[key], rtol, atol, f"{where}[{key!r}]")
            if found:
                return found
        return None
    raise TypeError(f"cannot compare reference data of type {type(expected).__name__}")


def deviation(expected: Any, actual: Any, rtol: float, atol: float) -> float:
    """How much of its tolerance a matching result uses: the largest
    |actual - expected| / (atol + rtol·|expected|) over its floating-point entries (0 if none)."""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        e, a = torch.as_tensor(expected), torch.as_tensor(actual)
        if not e.is_floating_point() or e.numel() == 0:
            return 0.0
        e, a = e.to(torch.float64), a.to(torch.float64)
        return ((a - e).abs().nan_to_num(nan=0.0) / (atol + rtol * e.abs())).max().item()
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not math.isnan(expected):
        return abs(actual - expected) / (atol + rtol * abs(expected))
    if isinstance(expected, (list, tuple)):
        return max((deviation(e, a, rtol, atol) for e, a in zip(expected, actual)), default=0.0)
    if isinstance(expected, dict):
        return max((deviation(expected[k], actual[k], rtol, atol) for k in expected), default=0.0)
    return 0.0


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."


@dataclass
class Verdict:
    passed: bool
    message: str  # empty when passed
    margin: float = 0.0  # when failed: how far past the tolerance (see ``Mismatch``)
    judged: bool = False  # failed by a judge (a statistical property), not by comparison
    raised: bool = False  # failed because the implementation raised an error


def judge_case(case: Case, expected: Outcome, actual: Outcome) -> Verdict:
    """Pass or fail one case, with a message that names the likely mistake.

    A result that differs from the reference's and fails a judge gets the more decisive of
    the two failures (a judge's plain-text verdict is decisive: no tolerance can fix it).
    """
    if expected.error is not None:
        return Verdict(False, f"internal error: the reference failed ({expected.error})")
    if actual.error is not None:
        return Verdict(False, actual.error, math.inf, raised=True)
    compared = None
    if case.compare:
        found = compare(expected.value, actual.value, case.rtol, case.atol)
        if found is not None and found.form:
            return Verdict(False, f"{found}: {FORM_HINT}", found.margin)
        if found:
            compared = Verdict(False, _sentence(found) + f" Likely mistake: {case.mistake}", found.margin)
    for judge in case.judges:
        try:
            found = judge(actual.value)
        except Exception as exc:  # noqa: BLE001 - malformed data fails the judge
            if compared:
                break
            found = Mismatch(f"the result could not be checked ({type(exc).__name__}: {exc})", form=True)
        if found and getattr(found, "form", False):
            return compared or Verdict(False, f"{found}: {FORM_HINT}", math.inf, judged=True)
        if found:
            judged = Verdict(False, _sentence(found) + f" Likely mistake: {case.mistake}", margin_of(found),
                             judged=True)
            return judged if compared is None or judged.margin > compared.margin else compared
    if compared:
        return compared
    changed = [effect for effect in actual.side_effects if effect not in expected.side_effects]
    if changed and not case.changes_arguments:
        return Verdict(False, f"{changed[0]}; {SIDE_EFFECT_HINT}", math.inf)
    return Verdict(True, "")


FORM_HINT = "return what the docstring describes (its type, shape and dtype)"
SIDE_EFFECT_HINT = "compute on a copy instead (x = x - y, not x -= y or x.sub_(y))"


def _sentence(text: str) -> str:
    """``text`` as a sentence: a full stop unless it already ends with one (or ? or !)."""
    text = text.rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


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
    passed = 0
    cases = suite.cases_for(name)
    for case in cases:
        verdict = _verdict(suite, case, obj)
        if not verdict.passed:
            print(f"✗ {case.name}: {verdict.message}")
            print(f"{name}: {passed} of {len(cases)} checks passed before this one.")
            for line in _failing_exercises_used_by(obj, suite):
                print(line)
            return
        print(f"✓ {case.name}")
        passed += 1
    print(f"{name}: all {len(cases)} checks passed.")


def _verdict(suite: Suite, case: Case, obj: Any) -> Verdict:
    return judge_case(case, run_case(case, suite.reference(), 0), run_case(case, _implementation_of(obj), 0))


def _failing_exercises_used_by(obj: Any, suite: Suite) -> list[str]:
    """A note for each earlier exercise that ``obj`` calls and that fails its own checks:
    the failure may be that exercise's, not this one's."""
    code = getattr(obj, "__code__", None)
    scope = getattr(obj, "__globals__", {})
    notes = []
    for used in dict.fromkeys(code.co_names if code else ()):
        if used == obj.__name__ or not suite.cases_for(used) or used not in scope:
            continue
        failed = next((v for v in (_verdict(suite, c, scope[used]) for c in suite.cases_for(used))
                       if not v.passed), None)
        if failed:
            notes.append(f"Note: {obj.__name__} calls {used}, which fails its own check ({failed.message}); "
                         f"fix {used} first.")
    return notes


def _try_load_suite(chapter: str) -> Suite | None:
    """A chapter's suite, or None if it has none (or another chapter's checks are broken)."""
    try:
        return load_suite(chapter)
    except Exception:  # noqa: BLE001 - one chapter's checks must not break another's
        return None
