"""Build the notebooks from their two sources: prose and reference code.

Each chapter has three editions, all built from the same two sources:

* *self-study* (``chapters/<stem>.ipynb``, committed): each exercise is a stub, its check,
  and the reference solution collapsed in a markdown cell under it;
* *class* (never committed; ``python -m utils.release`` writes it): the same without the
  solutions, for graded courses;
* *solved* (``solutions/<stem>_solved.ipynb``, committed): the reference code in place of
  each stub; the tests run it, and its executed copy becomes the course's web page.

Each chapter's prose is ``chapters/src/<stem>.md``: markdown, with fenced code blocks.

* A ```` ```python ```` block becomes a code cell, the same in every edition.
* An ```` ```exercise ```` block lists names from the chapter's ``solutions`` module, one a
  line. Each becomes a code cell holding the reference code (solved) or its stub (signature,
  docstring, ``raise NotImplementedError()``), then a cell ``check(name)``; in the
  self-study edition a collapsed solution follows. ``Class: method1 method2`` stubs only
  those methods of a class. The code cell's metadata names the exercise (``exercise``, and
  ``methods`` for such a class) so that later steps (the site) know which cell is which.
* A ```` ```given ```` block lists names whose reference code every edition shows as is,
  together in one cell.
* The first line is ``<!-- module: NAME -->``, naming ``solutions/NAME.py``.
* ``{{name}}`` in the prose is a number the run claims (``utils.claims``): it is rendered
  from ``chapters/claims/<stem>.json``, recorded by ``python -m utils.claims record``.

    python -m utils.notebooks [STEM]   # write chapters/<stem>.ipynb, solutions/<stem>_solved.ipynb
    python -m utils.notebooks --check  # fail if a committed notebook is stale

The solution sits in markdown, not in a code cell, because the grader and a notebook run
both take the *last* definition of a name from the code cells: a solution there would
replace the learner's own code.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from markdown_it import MarkdownIt

from utils import claims

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "chapters" / "src"
_MARKDOWN = MarkdownIt("commonmark")
_MODULE = re.compile(r"^<!--\s*module:\s*(\w+)\s*-->\s*$")
EDITIONS = ("self-study", "class", "solved")
COMMITTED = ("self-study", "solved")  # the editions ``targets`` names, in its order
_LEARNER = ("self-study", "class")  # the editions with stubs


@dataclass
class Block:
    kind: str  # markdown | python | exercise | given
    text: str


def parse(source: str, origin: str = "source") -> tuple[str, list[Block]]:
    """The module name and the blocks of a chapter source.

    markdown-it-py (CommonMark) finds the fenced blocks, so a fence inside a longer fence, a
    list or a quote stays prose; a top-level ``+++`` line breaks the prose between cells.
    """
    lines = source.splitlines()
    header = _MODULE.match(lines[0]) if lines else None
    if not header:
        raise ValueError(f"{origin}: the first line must be '<!-- module: NAME -->'")
    cuts = []  # (first line, end line, block or None for a break), in order
    for token in _MARKDOWN.parse(source):
        kind = token.info.strip() if token.type == "fence" else None
        if token.level == 0 and kind in ("python", "exercise", "given"):
            first, end = token.map
            closing = lines[end - 1].strip() if first + 1 < end <= len(lines) else ""  # the fence's last line
            if len(closing) < len(token.markup) or set(closing) != {token.markup[0]}:
                raise ValueError(f"{origin}: the ```{kind} block at line {first + 1} is never closed")
            cuts.append((first, end, Block(kind, token.content.strip("\n"))))
        elif token.type == "inline" and token.level == 1 and token.content == "+++":
            cuts.append((*token.map, None))
    blocks: list[Block] = []
    start = 1
    for first, end, block in [*cuts, (len(lines), len(lines), None)]:
        prose = "\n".join(lines[start:first]).strip("\n")
        if prose.strip():
            blocks.append(Block("markdown", prose))
        if block is not None:
            blocks.append(block)
        start = end
    return header.group(1), blocks


def _stub_function(node: ast.FunctionDef, lines: list[str]) -> list[str]:
    """Decorators, signature and docstring of ``node``, then ``raise NotImplementedError()``."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    keep_to = body[0].end_lineno if has_doc else body[0].lineno - 1
    indent = " " * body[0].col_offset
    return lines[first - 1: keep_to] + [f"{indent}raise NotImplementedError()"]


def definitions(module) -> dict[str, str]:
    """Source of each top-level function, class and assignment of a module, by name."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        for name in names:
            found[name] = "\n".join(lines[first - 1: node.end_lineno])
    return found


def stub(source: str, methods: list[str] | None = None) -> str:
    """The student's version of a reference function or class, from its source."""
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "\n".join(_stub_function(node, lines))
    if not isinstance(node, ast.ClassDef):
        raise TypeError("only functions and classes can be exercises")
    out = lines[: node.body[0].lineno - 1]
    previous_end = node.body[0].lineno - 1
    for item in node.body:
        start = min([item.lineno] + [d.lineno for d in getattr(item, "decorator_list", [])])
        out += lines[previous_end: start - 1]  # blank lines and comments between members
        is_method = isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
        if is_method and (methods is None or item.name in methods):
            out += _stub_function(item, lines)
        else:
            out += lines[start - 1: item.end_lineno]
        previous_end = item.end_lineno
    return "\n".join(out)


def parse_exercise(line: str) -> tuple[str, list[str] | None]:
    """``"name"`` or ``"Class: method1 method2"`` -> the name and the methods to stub (None: all)."""
    name, _, only = line.partition(":")
    return name.strip(), only.split() or None


def solution(code: str) -> str:
    """A collapsed markdown block showing ``code``: the self-study edition's solution cell."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)  # longer than any run of backticks in the code
    return f"<details><summary>Solution</summary>\n\n{fence}python\n{code}\n{fence}\n\n</details>"


def _cell(kind: str, text: str, index: int, metadata: dict) -> dict:
    cell_id = hashlib.sha1(f"{index}:{kind}".encode()).hexdigest()[:12]
    cell = {"cell_type": kind, "id": cell_id, "metadata": metadata, "source": text}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _notebook(cells: list[tuple[str, str, dict]]) -> dict:
    """The notebook of ``(kind, source, metadata)`` cells, the environment check first among its code."""
    first_code = next((i for i, (kind, _, _) in enumerate(cells) if kind == "code"), len(cells))
    cells = [*cells[:first_code], ("code", ENVIRONMENT_CHECK, {}), *cells[first_code:]]
    return {
        "cells": [_cell(kind, text, i, metadata) for i, (kind, text, metadata) in enumerate(cells)],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "course": {"generated": _digest([(kind, text) for kind, text, _ in cells])},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def build(source_path: Path, strict: bool = True) -> dict[str, dict]:
    """Every edition of one chapter (nbformat 4 dicts), by name (``EDITIONS``).

    ``strict=False`` leaves a claim that has no recorded value yet as its ``{{name}}``
    (``utils.claims.record`` builds so before the first run that records it).
    """
    module_name, blocks = parse(source_path.read_text(encoding="utf-8"), str(source_path))
    sources = definitions(importlib.import_module(f"solutions.{module_name}"))
    table = claims.load_table(source_path.stem)
    cells: dict[str, list] = {edition: [] for edition in EDITIONS}

    def add(kind: str, text: str, editions=EDITIONS, metadata: dict | None = None) -> None:
        for edition in editions:
            cells[edition].append((kind, text, dict(metadata or {})))

    for block in blocks:
        if block.kind == "markdown":
            add("markdown", claims.render(block.text, table, source_path.name, strict))
        elif block.kind == "python":
            add("code", block.text)
        elif block.kind == "given":  # one cell holding every definition listed
            names = [line.strip() for line in block.text.splitlines() if line.strip()]
            missing = [name for name in names if name not in sources]
            if missing:
                raise ValueError(f"{source_path.name}: solutions/{module_name}.py defines no {missing}")
            add("code", "\n\n\n".join(sources[name] for name in names))
        else:
            for line in filter(str.strip, block.text.splitlines()):
                name, methods = parse_exercise(line)
                if name not in sources:
                    raise ValueError(f"{source_path.name}: solutions/{module_name}.py defines no {name!r}")
                metadata = {"exercise": name, **({"methods": methods} if methods else {})}
                add("code", stub(sources[name], methods), _LEARNER, metadata)
                add("code", sources[name], ("solved",), metadata)
                add("code", f"check({name})")
                add("markdown", solution(sources[name]), ("self-study",))
    return {edition: _notebook(edition_cells) for edition, edition_cells in cells.items()}


# The first cell of every notebook: a kernel without the course installed (a system Jupyter,
# VS Code's default interpreter) would otherwise fail later with "No module named 'utils'",
# or import some other package of that name.
ENVIRONMENT_CHECK = """\
# This notebook needs the course's Python environment: start it with `make lab` from the course
# folder, or pick .venv/bin/python as the kernel (VS Code: Select Kernel > Python Environments).
import importlib.util
try:
    _course = importlib.util.find_spec("utils.checks") and importlib.util.find_spec("utils.claims")
except ModuleNotFoundError:
    _course = None
if not _course:
    raise ModuleNotFoundError("this kernel does not have the course installed: open the notebook "
                              "with `make lab`, or choose .venv/bin/python as its kernel")"""


def _digest(cells: list[tuple[str, str]]) -> str:
    """What a hand edit would change: the cells' kinds and sources."""
    return hashlib.sha256(json.dumps([list(c) for c in cells]).encode()).hexdigest()


def edited_by_hand(path: Path) -> bool:
    """Whether a generated notebook was changed since the build wrote it (a learner's answers,
    say): its cells no longer match the digest the build recorded in its metadata."""
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = [(c["cell_type"], "".join(c["source"])) for c in notebook["cells"]]
        return notebook["metadata"]["course"]["generated"] != _digest(cells)
    except (OSError, ValueError, KeyError, TypeError):
        return path.exists()


def _save(path: Path, text: str) -> None:
    """Write a generated notebook; an edited one is moved to the learner's workspace first."""
    if path.exists() and edited_by_hand(path):
        from utils.lab import WORKSPACE

        kept = WORKSPACE / path.name
        if kept.exists():
            kept = WORKSPACE / "rescued" / f"{time.strftime('%Y%m%d-%H%M%S')}-{path.name}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, kept)
        print(f"{path.relative_to(ROOT)} had been edited by hand: your version is now {kept.relative_to(ROOT)}")
    path.write_text(text, encoding="utf-8")


def targets(source_path: Path) -> tuple[Path, Path]:
    """Where the committed editions of a chapter live: its self-study and solved notebooks."""
    stem = source_path.stem
    return ROOT / "chapters" / f"{stem}.ipynb", ROOT / "solutions" / f"{stem}_solved.ipynb"


def render(notebook: dict) -> str:
    """The notebook as Jupyter writes it (validated, sources split into lines)."""
    node = nbformat.from_dict(notebook)
    nbformat.validate(node)
    return nbformat.writes(node) + "\n"


def write(source: Path, strict: bool = True) -> None:
    """Write the committed notebooks of one chapter source."""
    editions = build(source, strict)
    for edition, path in zip(COMMITTED, targets(source)):
        _save(path, render(editions[edition]))


def chapter_sources(stems: list[str] | None = None) -> list[Path]:
    """The chapter sources, in course order: all of them, or those of ``stems``."""
    sources = sorted(SOURCES.glob("*.md"))
    unknown = set(stems or ()) - {s.stem for s in sources}
    if unknown:
        raise ValueError(f"no chapter source for {', '.join(sorted(unknown))}; the chapters are "
                         f"{', '.join(s.stem for s in sources)} (see {SOURCES.relative_to(ROOT)}/)")
    return [s for s in sources if not stems or s.stem in stems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("stems", nargs="*", metavar="STEM", help="only these chapters (e.g. 1_embedding_arithmetic)")
    parser.add_argument("--check", action="store_true", help="only report stale notebooks (exit 1)")
    args = parser.parse_args(argv)
    try:
        sources = chapter_sources(args.stems)
    except ValueError as error:
        parser.error(str(error))
    stale = []
    for source in sources:
        editions = build(source)
        for edition, path in zip(COMMITTED, targets(source)):
            text = render(editions[edition])
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            if args.check:
                stale.append(path)
            else:
                _save(path, text)
                print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        edited = [p for p in stale if edited_by_hand(p)]
        print("stale notebooks: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) +
              " (they differ from chapters/src/ and solutions/; `make notebooks` regenerates them).")
        if edited:
            print("Edited by hand: " + ", ".join(str(p.relative_to(ROOT)) for p in edited) + ". "
                  "Work in workspace/ (`make lab` puts your copies there); `make notebooks` moves an "
                  "edited notebook there before regenerating it, so nothing is lost.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
