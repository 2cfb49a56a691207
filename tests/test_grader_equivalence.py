"""The grader gives what the checks give: every case of every chapter has the same outcome
in the sandbox as in one process; every chapter-1 mutant loses points in the sandbox; a
fork and a fresh interpreter agree; and N shards merged equal one unsharded run.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import shutil
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from utils.checks import CHAPTERS, Case, Outcome, Verdict, compare, describe_exception, judge_case, load_suite
from utils.grading.cli import main
from utils.grading.remote import RemoteError, begin, local_session
from utils.grading.reports import Policy, report
from utils.grading.runner import expected_outcomes, run_submission
from utils.grading.sandbox import Limits
from utils.grading.submission import infer_chapter, read_submission

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "submissions"
CHAPTER = "embedding_arithmetic"
LIMITS = Limits(timeout=60, memory_mb=2048)
SOLVED = {infer_chapter(read_submission(p)): p for p in sorted((ROOT / "solutions").glob("*_solved.ipynb"))}


def _exercises(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["exercises"]}


# --------------------------------------------------------------------------- every chapter


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_case_has_the_same_outcome_in_the_sandbox(chapter):
    """The solved notebook, graded in the sandbox, gives every case the outcome the reference
    module gives in this process: the same values (to the case's tolerance, samplers
    included: the same seeded random streams), no error, no side effect; full marks."""
    expected = expected_outcomes(chapter, 0)
    differences = []

    def judge(case: Case, outcome: Outcome) -> Verdict:
        reference = expected[case.id]
        found = outcome.error or compare(reference.value, outcome.value, case.rtol, case.atol)
        if found or outcome.side_effects != reference.side_effects:
            differences.append(f"{case.id}: {found or outcome.side_effects}")
        return judge_case(case, reference, outcome)

    run = run_submission(read_submission(SOLVED[chapter]), chapter, limits=LIMITS, fork_server=True, judge=judge)
    assert run.errors == [], run.errors
    assert not differences, differences
    suite = load_suite(chapter)
    assert all(run.exercises[e].verdicts[c.id].passed for e in suite.exercises for c in suite.cases_for(e))


def test_hidden_checks_cannot_be_imported(tmp_path):
    path = tmp_path / "peek.py"
    path.write_text("def normalize_rows(E, eps=1e-8):\n    import tests.test_embedding_arithmetic\n")
    seen = {}
    run_submission(read_submission(path), CHAPTER, ["normalize_rows"], limits=LIMITS, fork_server=True,
                   judge=lambda case, outcome: seen.setdefault(outcome.error, Verdict(False, "")))
    assert set(seen) == {"ModuleNotFoundError: No module named 'tests' (not available while grading) "
                         "(at <peek.py>, line 2: import tests.test_embedding_arithmetic)"}


def test_a_callable_from_the_check_answers_truth_and_its_errors_are_described():
    """Student code may write ``sampler or default`` with the check's sampler; and when a
    callable of the check raises, the student is told where, not given an empty message."""
    student = begin(local_session(types.SimpleNamespace(pick=lambda f, x: (f or abs)(x))), 0)
    assert student.pick(lambda x: x * 2, 3) == 6
    with pytest.raises(RemoteError) as raised:
        student.pick(lambda x: 1 / 0, 3)
    assert describe_exception(raised.value).startswith(
        "ZeroDivisionError raised by a function the check passed to your code")


# --------------------------------------------------------------------------- mutants


def _mutant_submissions(directory: Path, chapter: str) -> list[tuple[Path, dict[str, str]]]:
    """Real submissions made of the reference code with one function per exercise
    replaced by a mutant: submission k holds the k-th mutant of every exercise, and the
    reference's own version of every other exercise.

    The mutants module refers to the reference as ``ref`` and imports some of its
    functions; in the submission, ``ref`` is a class holding a private copy of the
    reference (a literal source string run in its body), so a mutant that calls
    ``ref.f`` gets the reference's ``f``, not itself.
    """
    reference = (ROOT / "solutions" / f"{chapter}.py").read_text()
    module = importlib.import_module(f"tests.mutants.{chapter}")
    tree = ast.parse(inspect.getsource(module))
    from_reference = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                      and node.module == f"solutions.{chapter}" for alias in node.names}

    class UseReference(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in from_reference and isinstance(node.ctx, ast.Load):
                return ast.copy_location(ast.Attribute(ast.Name("ref", ast.Load()), node.id, ast.Load()), node)
            return node

    helpers = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(n.split(".")[0] in ("solutions", "tests") for n in names):
                continue
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            continue  # the mutants themselves
        helpers.append(ast.unparse(UseReference().visit(node)))
    preamble = "\n\n".join([
        reference,
        f"REFERENCE_SOURCE = {reference!r}",
        "class ref:\n    import sys, types\n    _module = types.ModuleType('reference')\n"
        "    sys.modules['reference'] = _module\n"
        "    exec(compile(REFERENCE_SOURCE, 'reference', 'exec'), _module.__dict__)\n"
        "    locals().update({k: v for k, v in vars(_module).items() if not k.startswith('__')})",
        *helpers])
    groups: list[dict] = []
    for variant in module.mutants.variants:
        if variant.correct:
            continue
        group = next((g for g in groups if variant.exercise not in g), None)
        if group is None:
            groups.append(group := {})
        group[variant.exercise] = variant
    made = []
    for k, group in enumerate(groups):
        replaced = []
        for exercise, variant in group.items():
            function = ast.parse(inspect.getsource(variant.implementation).strip()).body[0]
            function.name, function.decorator_list = exercise, []
            replaced.append(ast.unparse(UseReference().visit(function)))
        # the other exercises are the reference's own, not the reference calling a mutant
        replaced += [f"def {name}(*args, **kwargs):\n    return ref.{name}(*args, **kwargs)"
                     for name in load_suite(chapter).exercises if name not in group]
        path = directory / f"mutants_{k}.py"
        path.write_text(preamble + "\n\n\n" + "\n\n\n".join(replaced) + "\n")
        made.append((path, {exercise: v.description for exercise, v in group.items()}))
    return made


@pytest.fixture(scope="module")
def mutant_reports(tmp_path_factory):
    """Each mutant submission run once, then given points under both policies."""
    made = _mutant_submissions(tmp_path_factory.mktemp("mutants"), CHAPTER)
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda path: run_submission(read_submission(path), CHAPTER, limits=LIMITS,
                                                         fork_server=True), [p for p, _ in made]))
    partial = {p.stem: report(p.name, CHAPTER, r.errors, r, Policy()) for (p, _), r in zip(made, runs)}
    strict = {p.stem: report(p.name, CHAPTER, r.errors, r, Policy(all_or_nothing=True)) for (p, _), r in zip(made, runs)}
    return made, partial, strict


def test_every_mutant_loses_points_on_its_exercise(mutant_reports):
    made, partial, strict = mutant_reports
    assert sum(len(group) for _, group in made) == sum(
        not v.correct for v in importlib.import_module(f"tests.mutants.{CHAPTER}").mutants.variants)
    for path, group in made:
        for reports, policy in ((partial, "partial credit"), (strict, "all-or-nothing")):
            result = reports[path.stem]
            assert result["errors"] == [], result["errors"]
            for name, entry in _exercises(result).items():
                if name in group:
                    assert entry["status"] in ("failed", "error"), (group[name], entry)
                    limit = 0.0 if policy == "all-or-nothing" else entry["max_score"]
                    assert entry["score"] < entry["max_score"] and entry["score"] <= limit, \
                        (policy, group[name], entry)
                else:  # the rest of the submission is the reference: full marks
                    assert entry["status"] == "passed", (name, entry)


def test_partial_credit_is_split_over_cases(mutant_reports):
    made, partial, strict = mutant_reports
    suite = load_suite(CHAPTER)
    seen_partial = False
    for path, group in made:
        for name in group:
            entry = _exercises(partial[path.stem])[name]
            assert entry["checks"] == len(suite.cases_for(name))
            assert entry["score"] == pytest.approx(entry["checks_passed"] / entry["checks"])
            seen_partial |= 0 < entry["score"]
            assert _exercises(strict[path.stem])[name]["score"] == 0
    assert seen_partial, "no mutant passes some but not all of its checks"


def test_fork_server_and_fresh_interpreter_agree(mutant_reports):
    """The same submission graded by a freshly started worker gets the same report."""
    made, partial, _ = mutant_reports
    path = made[0][0]
    run = run_submission(read_submission(path), CHAPTER, limits=LIMITS, fork_server=False)
    fresh = report(path.name, CHAPTER, run.errors, run, Policy())
    forked = dict(partial[path.stem])
    for result in (fresh, forked):
        result.pop("duration_s"), result.pop("peak_memory_mb")
    assert fresh == forked


# --------------------------------------------------------------------------- shards


def _contents(folder: Path) -> dict[str, str]:
    """Every file of a batch's output, with the measurements (timings, memory) taken out."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = path.read_text()
        if path.suffix == ".json" and path.parent == folder:
            report = json.loads(text)
            report.pop("duration_s"), report.pop("peak_memory_mb")
            text = json.dumps(report)
        found[path.relative_to(folder).as_posix()] = text
    return found


def test_shards_merged_equal_one_unsharded_run(tmp_path):
    class_ = tmp_path / "class"
    class_.mkdir()
    for name in ("x", "y", "x__dup.py", "=cmd|calc!A1.py", "control_chars.py", "int_source.ipynb",
                 "null_worksheets.ipynb"):
        source = CORPUS / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, class_ / name)
    (class_ / "linked.ipynb").symlink_to(SOLVED[CHAPTER])
    options = ["--jobs", "2", "--format", "json,gradescope,junit,csv", "--quiet"]
    assert main([str(class_), "--out", str(tmp_path / "whole"), *options]) == 0
    for k in range(3):
        assert main([str(class_), "--out", str(tmp_path / f"shard{k}"), "--shard", f"{k}/3", *options]) == 0
    shards = [str(tmp_path / f"shard{k}") for k in range(3)]
    assert all(any(Path(s).glob("*.json")) for s in shards), "a shard got nothing: pick other names"
    assert main([*shards, "--merge", "--out", str(tmp_path / "merged"), "--format", "json,gradescope,junit,csv",
                 "--quiet"]) == 0
    whole, merged = _contents(tmp_path / "whole"), _contents(tmp_path / "merged")
    assert {"gradebook.csv", "junit.xml", "x%2Fdup.py.json", "gradescope/x%2Fdup.py/results.json"} <= set(whole)
    assert whole == merged
