"""The grader (``python -m utils.grade``): hostile and broken submissions, the reference
notebook, and every mutant of chapter 1, each with the report it must get.

The corpus is ``tests/submissions/``; it is graded once, through the command line, in
parallel, and each test below checks one submission's report. Mutants are turned into
real submissions (the reference code with one function replaced) and graded in-process.
"""

from __future__ import annotations

import ast
import csv
import importlib
import inspect
import json
import shutil
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from utils.checks import CHAPTERS, load_suite
from utils.grade import Policy, attempt, grade_batch, main, report
from utils.sandbox import Limits, run_submission
from utils.submission import infer_chapter, read_submission

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "submissions"
SOLVED = ROOT / "solutions" / "1_embedding_arithmetic_solved.ipynb"
CHAPTER = "embedding_arithmetic"
EXERCISES = load_suite(CHAPTER).exercises


def _exercises(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["exercises"]}


def _isolated(report: dict, layer: str) -> None:
    """Skip what this kernel cannot enforce (the report says which layers it got)."""
    if not any(s.startswith(layer) for s in report["sandbox"]):
        pytest.skip(f"this machine does not allow {layer} (sandbox: {report['sandbox']})")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Grade the corpus, the solved notebook and a second copy of one file, once, through
    the command line's entry point (in this process, so that it shares the fork server)."""
    tmp = tmp_path_factory.mktemp("corpus")
    out = tmp / "reports"
    submissions = shutil.copytree(CORPUS, tmp / "submissions")
    tamper = submissions / "tamper.py"  # the student knows where reports go
    tamper.write_text(tamper.read_text().replace("REPORT_DIRECTORY = None", f"REPORT_DIRECTORY = {str(out)!r}"))
    again = tmp / "again"
    again.mkdir()
    shutil.copy(CORPUS / "crashes.py", again / "crashes_again.py")
    status = main([str(submissions), str(SOLVED), str(again), "--out", str(out), "--jobs", "2",
                   "--timeout", "3", "--memory", "3000", "--points", "normalize_rows=3",
                   "--format", "json,gradescope,junit,csv", "--quiet"])
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    return {"status": status, "out": out, "reports": reports}


# --------------------------------------------------------------------------- the command


def test_every_submission_gets_a_report_in_every_format(corpus):
    out, reports = corpus["out"], corpus["reports"]
    assert corpus["status"] == 0
    stems = {p.stem for p in CORPUS.iterdir() if p.suffix in (".py", ".ipynb")} | {SOLVED.stem, "crashes_again"}
    assert set(reports) == stems
    for stem, report in reports.items():
        assert set(report) >= {"submission", "chapter", "score", "max_score", "exercises", "errors"}
        for exercise in report["exercises"]:
            assert set(exercise) == {"name", "status", "score", "max_score", "message", "checks_passed", "checks"}
            assert exercise["status"] in ("passed", "failed", "error", "timeout", "missing")
        results = json.loads((out / "gradescope" / stem / "results.json").read_text())
        assert results["score"] == report["score"]
        assert [t["name"] for t in results["tests"]] == [e["name"] for e in report["exercises"]]
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert {r["submission"] for r in rows} == stems
    solved = next(r for r in rows if r["submission"] == SOLVED.stem)
    assert float(solved["score"]) == float(solved["max_score"]) == len(EXERCISES) + 2
    junit = ET.parse(out / "junit.xml").getroot()
    assert len(junit.findall("testsuite")) == len(stems)
    crashes = next(s for s in junit.findall("testsuite") if s.get("name") == "crashes")
    assert int(crashes.get("errors")) >= 5


def test_bad_usage_exits_with_2(tmp_path, capsys):
    for argv in ([str(tmp_path / "nowhere.ipynb"), "--out", str(tmp_path)],
                 [str(SOLVED), "--out", str(tmp_path), "--format", "pdf"],
                 [str(SOLVED), "--out", str(tmp_path), "--chapter", "astrology"],
                 [str(SOLVED), "--out", str(tmp_path), "--jobs", "0"],
                 [str(SOLVED)]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- reports


def test_reference_notebook_scores_full_marks(corpus):
    report = corpus["reports"][SOLVED.stem]
    assert report["chapter"] == CHAPTER and report["errors"] == []
    assert [e["name"] for e in report["exercises"]] == EXERCISES
    assert all(e["status"] == "passed" for e in report["exercises"]), report
    assert _exercises(report)["normalize_rows"]["max_score"] == 3.0  # --points
    assert report["score"] == report["max_score"] == len(EXERCISES) + 2


def test_cheating_earns_nothing(corpus):
    """Attacks that fail whatever the kernel allows: comparisons happen in the grader."""
    exercises = _exercises(corpus["reports"]["tamper"])
    expected = {
        "normalize_rows": ("error", "No module named 'solutions' (not available while grading)"),
        "cosine_similarity": ("error", "AlwaysEqual; return torch tensors"),  # always-equal object
        "analogy_3cosmul": ("failed", "are wrong"),  # prints "All tests passed", writes reports
        "project_onto_span": ("error", "result channel"),  # forges results on the pipe
        "analogy_scores": ("failed", "are wrong"),  # patched torch.allclose, numpy.testing, checks
        "evaluate_analogies": ("error", "Error"),  # the network
    }
    for name, (status, words) in expected.items():
        assert exercises[name]["status"] == status, exercises[name]
        assert words in exercises[name]["message"], exercises[name]
        assert exercises[name]["score"] == 0


def test_solutions_and_reports_are_out_of_reach(corpus):
    """Reading the reference or writing reports needs the file system closed (Landlock)."""
    report = corpus["reports"]["tamper"]
    _isolated(report, "landlock")
    exercises = _exercises(report)
    for name in ("nearest_neighbours", "analogy_3cosadd"):  # reads / imports solutions/
        assert exercises[name]["status"] == "error", exercises[name]
        assert "PermissionError: [Errno 13] Permission denied" in exercises[name]["message"]
    assert report["score"] == 0
    assert sorted(p.name for p in corpus["out"].iterdir() if p.is_file() and "tamper" in p.name) == \
        ["tamper.json"]
    assert not (corpus["out"] / "planted.txt").exists()


def test_crashes_cost_only_their_exercise(corpus):
    report = corpus["reports"]["crashes"]
    exercises = _exercises(report)
    expected = {
        "normalize_rows": ("passed", "all 3 checks passed"),
        "cosine_similarity": ("timeout", "longer than 3 s"),
        "nearest_neighbours": ("error", "sys.exit('nothing more to do')"),
        "analogy_3cosadd": ("error", "exited (exit code 3)"),
        "analogy_3cosmul": ("error", "segmentation fault"),
        "project_onto_span": ("passed", "all 3 checks passed"),
        "analogy_scores": ("error", "memory"),
        "evaluate_analogies": ("error", "not implemented yet"),
    }
    for name, (status, words) in expected.items():
        assert exercises[name]["status"] == status, exercises[name]
        assert words in exercises[name]["message"].lower() or words in exercises[name]["message"], \
            exercises[name]
    assert report["score"] == 3 + 1


def test_no_process_outlives_grading(corpus):
    deadline = time.monotonic() + 5  # SIGKILL is immediate; /proc may lag a little
    while True:
        survivors = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if b"987." in cmdline.read_bytes() and b"sleep" in cmdline.read_bytes():
                    survivors.append(cmdline.read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not survivors


def test_broken_notebooks_still_get_graded(corpus):
    reports = corpus["reports"]
    not_json = reports["not_json"]
    assert "not valid notebook JSON" in not_json["errors"][0] and not_json["exercises"] == []
    old = reports["old_nbformat"]
    assert "old notebook (nbformat 3)" in old["errors"][0]
    syntax = reports["syntax_error_cell"]
    assert syntax["errors"] == ["code cell 3 has a syntax error: '(' was never closed (line 3); "
                                "read from it anyway: project_onto_span"]
    for report in (old, syntax):
        statuses = {e["name"]: e["status"] for e in report["exercises"]}
        assert statuses["normalize_rows"] == statuses["cosine_similarity"] == "passed"
        assert statuses["nearest_neighbours"] == "missing"
    assert _exercises(syntax)["project_onto_span"]["status"] == "passed"  # beside the broken def


def test_order_duplicates_and_top_level_code_do_not_matter(corpus):
    report = corpus["reports"]["reordered"]
    exercises = _exercises(report)
    assert report["errors"] == []  # magics are ignored; training loops, plots, data never run
    assert exercises["normalize_rows"]["status"] == "passed"  # the last definition wins
    assert exercises["cosine_similarity"]["status"] == "passed"  # its helper comes later
    message = exercises["nearest_neighbours"]["message"]
    assert "NameError: name 'SCALE' is not defined (grading runs only imports" in message
    assert report["duration_s"] < 60


def test_same_submission_same_report(corpus):
    first, second = (dict(corpus["reports"][stem]) for stem in ("crashes", "crashes_again"))
    for report in (first, second):
        report.pop("duration_s"), report.pop("submission")
    assert first["seed"] == 0
    assert json.dumps(first) == json.dumps(second).replace("crashes_again.py", "crashes.py")


def test_feedback_never_shows_check_code_or_expected_values(corpus):
    check_lines = {line.strip() for line in (ROOT / "tests" / f"test_{CHAPTER}.py").read_text().splitlines()
                   if len(line.strip()) > 25 and not line.strip().startswith(("#", '"', "@suite", "def "))}
    for report in corpus["reports"].values():
        text = json.dumps(report, ensure_ascii=False)
        assert "tensor(" not in text and "array(" not in text
        leaked = [line for line in check_lines if line in text]
        assert not leaked, leaked


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
                     for name in EXERCISES if name not in group]
        path = directory / f"mutants_{k}.py"
        path.write_text(preamble + "\n\n\n" + "\n\n\n".join(replaced) + "\n")
        made.append((path, {exercise: v.description for exercise, v in group.items()}))
    return made


@pytest.fixture(scope="module")
def mutant_reports(tmp_path_factory):
    """Each mutant submission run once, then given points under both policies."""
    made = _mutant_submissions(tmp_path_factory.mktemp("mutants"), CHAPTER)
    policy = Policy(limits=Limits(timeout=20, memory_mb=3000))
    with ThreadPoolExecutor(2) as pool:
        attempts = list(pool.map(lambda path: attempt(path, CHAPTER, policy), [p for p, _ in made]))
    partial = {a.path.stem: report(a, policy) for a in attempts}
    strict = {a.path.stem: report(a, Policy(all_or_nothing=True, limits=policy.limits)) for a in attempts}
    return made, partial, strict


def test_every_mutant_loses_points_on_its_exercise(mutant_reports):
    made, partial, strict = mutant_reports
    assert sum(len(group) for _, group in made) == sum(
        not v.correct for v in importlib.import_module(f"tests.mutants.{CHAPTER}").mutants.variants)
    for path, group in made:
        for reports, policy in ((partial, "partial credit"), (strict, "all-or-nothing")):
            report = reports[path.stem]
            assert report["errors"] == [], report["errors"]
            for name, entry in _exercises(report).items():
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


def test_fork_server_and_fresh_interpreter_agree(tmp_path, mutant_reports):
    """The same submission graded by a freshly started worker gets the same report."""
    made, partial, _ = mutant_reports
    path = made[0][0]
    fresh = grade_batch([path], tmp_path, CHAPTER, policy=Policy(fork_server=False,
                        limits=Limits(timeout=20, memory_mb=3000)), progress=False)[path.stem]
    forked = dict(partial[path.stem])
    for report in (fresh, forked):
        report.pop("duration_s")
    assert fresh == forked


# --------------------------------------------------------------------------- every chapter

CHAPTERS_WITH_CHECKS = [c for c in CHAPTERS if (ROOT / "tests" / f"test_{c}.py").exists()]
SOLVED_NOTEBOOKS = sorted((ROOT / "solutions").glob("*_solved.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_CHECKS)
def test_every_chapters_checks_run_in_the_sandbox(tmp_path, chapter):
    """The hidden checks load in the student's process, where solutions/ is unreachable."""
    first = load_suite(chapter).exercises[0]
    path = tmp_path / "stub.py"
    path.write_text(f"def {first}(*args, **kwargs):\n    raise NotImplementedError\n")
    run = run_submission(read_submission(path), chapter, [first], limits=Limits(memory_mb=3000),
                         fork_server=True)
    assert run.errors == [], run.errors
    assert {o.error for o in run.exercises[first].outcomes.values()} == \
        {f"not implemented yet: {first} is still the stub that raises NotImplementedError"}


@pytest.mark.parametrize("notebook", SOLVED_NOTEBOOKS, ids=[p.stem for p in SOLVED_NOTEBOOKS])
def test_every_solved_notebook_scores_full_marks(tmp_path, notebook):
    chapter = infer_chapter(read_submission(notebook))
    if chapter not in CHAPTERS_WITH_CHECKS:
        pytest.skip(f"{notebook.name}: no hidden checks for its chapter yet")
    result = grade_batch([notebook], tmp_path, chapter, policy=Policy(limits=Limits(memory_mb=3000)),
                         progress=False)[notebook.stem]
    failed = {e["name"]: e["message"] for e in result["exercises"] if e["status"] != "passed"}
    assert not failed and result["score"] == result["max_score"], failed


def test_hidden_checks_cannot_be_imported(tmp_path):
    path = tmp_path / "peek.py"
    path.write_text("def normalize_rows(E, eps=1e-8):\n    import tests.test_embedding_arithmetic\n")
    run = run_submission(read_submission(path), CHAPTER, ["normalize_rows"], limits=Limits(memory_mb=3000),
                         fork_server=True)
    errors = {o.error for o in run.exercises["normalize_rows"].outcomes.values()}
    assert errors == {"ModuleNotFoundError: No module named 'tests' (not available while grading) "
                      "(at <peek.py>, line 2: import tests.test_embedding_arithmetic)"}
