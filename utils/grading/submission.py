"""Reading a student's submission: the definitions in a notebook or a .py file.

Only what grading needs is kept: imports, function and class definitions, and
assignments of literal constants, from every code cell, in order (so the last definition
of a name wins, as when the notebook runs top to bottom). Training loops, plots and other
top-level code never run. A cell that does not parse is reported, and the definitions in
it that parse on their own are still read; the rest of the notebook is graded as usual.

Whatever the file holds, reading it ends in a ``Submission`` or a ``ValueError`` that says
what is wrong: a notebook larger than ``MAX_FILE_MB`` or with more than ``MAX_CODE_MB`` of
code is refused before it is parsed, so a hostile file costs the grader little memory.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from utils.checks import CHAPTERS

COURSE_INTERNALS = ("solutions", "tests")  # never importable while grading
SUFFIXES = (".ipynb", ".py")
MAX_FILE_MB = 50  # a notebook with its outputs
MAX_CODE_MB = 5  # the code cells together

# IPython syntax that is not Python: magics, shell escapes, help.
_IPYTHON_LINE = re.compile(r"^\s*(%|!|\?|[A-Za-z_][\w.]*\?\??\s*$)")
# CPython 3.11 keeps ast.parse's recursion counter per interpreter, not per thread: two
# threads parsing at once (--jobs 2) can fail one with "SystemError: AST constructor
# recursion depth mismatch". Parsing is a small part of grading, so it is serialised.
_PARSE_LOCK = threading.Lock()


def _parse(source: str) -> ast.Module:
    with _PARSE_LOCK:
        return ast.parse(source)


@dataclass
class Statement:
    """One top-level statement to run, and where it came from (for error messages)."""

    code: str
    origin: str  # e.g. "cell 7" or "line 12"
    defines: list[str] = field(default_factory=list)


@dataclass
class Submission:
    path: Path
    statements: list[Statement]
    errors: list[str]
    assigned_by_skipped_code: set[str] = field(default_factory=set)

    def defined_names(self) -> set[str]:
        return {name for s in self.statements for name in s.defines}

    def skipped_names(self) -> set[str]:
        """Globals only top-level code assigns, which grading does not run."""
        return self.assigned_by_skipped_code - self.defined_names()


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _kept(node: ast.stmt) -> list[str] | None:
    """The names a top-level statement defines, or None if grading must not run it."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if any(m.split(".")[0] in COURSE_INTERNALS for m in modules):
            return None  # a later chapter may use an earlier one's reference code; grading never does
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, ast.Assign) and _is_literal(node.value) and all(
            isinstance(t, ast.Name) for t in node.targets):
        return [t.id for t in node.targets]
    if isinstance(node, ast.AnnAssign) and node.value is not None and _is_literal(node.value) \
            and isinstance(node.target, ast.Name):
        return [node.target.id]
    return None


def _assigned(node: ast.stmt) -> list[str]:
    """Names a skipped top-level statement would have assigned (for a hint on NameError)."""
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For)) else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


_TOP_LEVEL_START = re.compile(r"^(def |async def |class |@|import |from )")


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """Line ranges that each start a top-level definition or import (a decorator keeps its def)."""
    starts = [i for i, line in enumerate(lines) if _TOP_LEVEL_START.match(line)
              and not (i and lines[i - 1].startswith("@"))]
    return list(zip([0] + starts, starts + [len(lines)]))


def _statements(source: str, origin: str) -> tuple[list[Statement], list[str], str | None]:
    """What grading runs from one cell, the names it skips, and a syntax problem if any.

    A cell that does not parse is cut into its top-level definitions, and each one that
    parses on its own is still read: one broken function costs only itself.
    """
    lines = ["" if _IPYTHON_LINE.match(line) else line for line in source.splitlines()]
    try:
        trees, error = [_parse("\n".join(lines))], None
    except SyntaxError as exc:
        trees, error = [], f"{origin} has a syntax error: {exc.msg} (line {exc.lineno})"
        for start, end in _blocks(lines):
            try:  # blank lines in front keep the cell's line numbers
                trees.append(_parse("\n" * start + "\n".join(lines[start:end])))
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; nesting too deep for the parser
        trees, error = [], f"{origin} cannot be parsed ({type(exc).__name__}: {str(exc)[:100]})"
    kept, skipped = [], []
    for node in (node for tree in trees for node in tree.body):
        names = _kept(node)
        if names is None:
            skipped += _assigned(node)
        else:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            # blank lines in front keep line numbers in tracebacks those of the cell
            code = "\n" * (first - 1) + "\n".join(lines[first - 1: node.end_lineno])
            kept.append(Statement(code, origin, names))
    if error:
        defined = [name for statement in kept for name in statement.defines]
        error += f"; read from it anyway: {', '.join(defined)}" if defined else "; it was skipped"
    return kept, skipped, error


def _notebook_cells(path: Path) -> tuple[list[str], list[str]]:
    """The code cells' sources, and any problems reading the notebook."""
    try:
        notebook = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return [], [f"{path.name} is not a text file; expected a Jupyter notebook (.ipynb)"]
    except json.JSONDecodeError as exc:
        return [], [f"{path.name} is not valid notebook JSON (line {exc.lineno}, column "
                    f"{exc.colno}: {exc.msg}); was it saved completely? Re-save it in Jupyter."]
    except RecursionError:
        return [], [f"{path.name} is JSON nested too deeply to be a notebook; re-save it in Jupyter"]
    if not isinstance(notebook, dict):
        return [], [f"{path.name} is JSON but not a notebook (no 'cells')"]
    problems = []
    if "cells" in notebook:
        cells = notebook["cells"]
        source_key = "source"
        if notebook.get("nbformat", 4) != 4:
            problems.append(f"{path.name} declares nbformat {notebook.get('nbformat')!r:.20}; read as 4")
    elif "worksheets" in notebook:  # nbformat 3 and older
        worksheets = notebook["worksheets"] if isinstance(notebook["worksheets"], list) else []
        cells = [c for w in worksheets if isinstance(w, dict) and isinstance(w.get("cells"), list)
                 for c in w["cells"]]
        source_key = "input"
        problems.append(f"{path.name} is an old notebook (nbformat {notebook.get('nbformat')!r:.20}); "
                        "it was read, but please re-save it with a current Jupyter")
    else:
        return [], [f"{path.name} is JSON but has no cells; is it a notebook?"]
    if not isinstance(cells, list):
        return [], problems + [f"{path.name} has no list of cells; re-save it in Jupyter"]
    sources = []
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type", "code") != "code":
            continue
        source = cell.get(source_key, "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            problems.append(f"code cell {len(sources) + 1} has a source that is not text; it was skipped")
            source = ""
        sources.append(source)
    return sources, problems


def read_submission(path: str | Path) -> Submission:
    """The statements grading runs from a notebook or a .py file, plus reading problems.

    Raises ``ValueError`` for what is not a submission at all (a link, another kind of
    file, a file too large) and ``OSError`` for a file that cannot be read.
    """
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path.name} is a symbolic link; submit the file itself")
    if not path.is_file():
        raise FileNotFoundError(f"no submission at {path}")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path.name}: a submission is a notebook (.ipynb) or a Python file (.py)")
    size = path.stat().st_size
    if size > MAX_FILE_MB << 20:
        raise ValueError(f"{path.name} is {size / 2**20:.0f} MB, more than the {MAX_FILE_MB} MB a submission may "
                         "be: clear its outputs (Edit > Clear Outputs of All Cells) and remove large data")
    if path.suffix == ".ipynb":
        sources, errors = _notebook_cells(path)
        origins = [f"code cell {i + 1}" for i in range(len(sources))]
    else:
        try:
            sources, errors = [path.read_bytes().decode("utf-8")], []
        except UnicodeDecodeError:
            sources, errors = [], [f"{path.name} is not UTF-8 text"]
        origins = [path.name]
    code = sum(len(s) for s in sources)
    if code > MAX_CODE_MB << 20:
        raise ValueError(f"the code cells of {path.name} hold {code / 2**20:.0f} MB, more than the {MAX_CODE_MB} MB "
                         "grading reads: load large data from files instead of writing it into a cell")
    statements, skipped = [], set()
    for source, origin in zip(sources, origins):
        kept, assigned, error = _statements(source, origin)
        statements += kept
        skipped.update(assigned)
        if error:
            errors.append(error)
    return Submission(path, statements, errors, skipped)


def infer_chapter(submission: Submission) -> str | None:
    """The chapter whose exercises the submission defines most of (or its file name says)."""
    from utils.checks import load_suite

    for chapter in CHAPTERS:
        if chapter in submission.path.stem:
            return chapter
    defined = submission.defined_names()
    best, best_hits = None, 0
    for chapter in CHAPTERS:
        try:
            exercises = load_suite(chapter).exercises
        except ModuleNotFoundError:
            continue
        hits = len(defined & set(exercises))
        if hits > best_hits:
            best, best_hits = chapter, hits
    return best
