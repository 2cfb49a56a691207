"""Numbers in the prose are claims about a run: recorded by the code, rendered, checked.

A chapter's prose never types a result. A notebook cell records it,

    claim("glove_accuracy", result.accuracy, "{:.2%}")

and the prose (``chapters/src/<stem>.md``) refers to it by name, ``{{glove_accuracy}}`` or
``{{glove_accuracy:.1%}}`` for another format. ``python -m utils.claims record`` runs the
solved notebooks, stores every recorded claim in ``chapters/claims/<stem>.json`` (its value,
its text and its tolerance) and regenerates the notebooks, whose prose then shows the
recorded text. The tests run the solved notebooks again and fail when a claim is missing,
new, or further from its recorded value than its tolerance; they also fail when the prose
states a number that is not a claim (``literal_numbers``).

Tolerance: by default a rerun must give the same integer, or a float within one unit of the
last digit the text shows (46.37% allows 46.36% to 46.38%). A number that depends on the
random draw order sets a wider ``tol`` and the prose says it is from the reference run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from numbers import Number
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "chapters" / "claims"
RECORD_TO = "COURSE_CLAIMS_FILE"  # where a run appends its claims (set by whoever runs it)
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*(?::([^}]*))?\}\}")


# --------------------------------------------------------------------------- in the notebook


def claim(name: str, value: Any, fmt: str = "{}", tol: float | None = None) -> Any:
    """Record ``value`` as the claim ``name`` (shown in the prose as ``fmt.format(value)``).

    ``value``: a number, a string, or a sequence of numbers (shown joined by ", ");
    ``tol``: how far a rerun may land from it (default: one unit of the last shown digit).
    Returns ``value``, so a claim can be made where the value is computed.
    """
    plain = _plain(value)
    text = _text(plain, fmt)
    entry = {"value": plain, "text": text, "fmt": fmt,
             "tol": _default_tolerance(plain, text) if tol is None else float(tol)}
    destination = os.environ.get(RECORD_TO)
    if destination:
        with open(destination, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, **entry}) + "\n")
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors, arrays, numpy scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (Number, str)):
        raise TypeError(f"a claim is a number, a string or a sequence of numbers, not {type(value).__name__}")
    return value


def _text(value: Any, fmt: str) -> str:
    return ", ".join(fmt.format(v) for v in value) if isinstance(value, list) else fmt.format(value)


def _default_tolerance(value: Any, text: str) -> float:
    """One unit of the last digit shown: 0 for integers, 0.0001 for "46.37%", 0.001 for "0.936"."""
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, (int, str)) for v in values):
        return 0.0
    first = re.search(r"-?\d[\d,]*(?:\.(\d+))?(?:e([-+]?\d+))?(%?)", text.split(", ")[0])
    if first is None:
        return 0.0
    decimals, exponent, percent = first.groups()
    unit = 10.0 ** -len(decimals or "") * 10.0 ** int(exponent or 0)
    return unit / 100 if percent else unit


# --------------------------------------------------------------------------- tables


def table_path(stem: str) -> Path:
    return TABLES / f"{stem}.json"


def load_table(stem: str) -> dict[str, dict]:
    """The recorded claims of a chapter (empty when it has none yet)."""
    path = table_path(stem)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def read_recording(path: Path) -> dict[str, dict]:
    """The claims a run appended to ``path``; a claim recorded twice keeps its last value."""
    found: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            found[entry.pop("name")] = entry
    return found


def disagreements(recorded: dict[str, dict], run: dict[str, dict]) -> list[str]:
    """How a run's claims differ from the recorded ones (empty: they agree)."""
    problems = [f"{name}: recorded, but this run did not claim it" for name in recorded if name not in run]
    problems += [f"{name}: claimed by this run but never recorded (run `python -m utils.claims record`)"
                 for name in run if name not in recorded]
    for name in recorded.keys() & run.keys():
        was, now, tol = recorded[name]["value"], run[name]["value"], recorded[name]["tol"]
        if not _within(was, now, tol):
            problems.append(f"{name}: the prose says {recorded[name]['text']}, this run gives "
                            f"{run[name]['text']} (tolerance {tol:g})")
    return sorted(problems)


def _within(was: Any, now: Any, tol: float) -> bool:
    if isinstance(was, list) or isinstance(now, list):
        return isinstance(was, list) and isinstance(now, list) and len(was) == len(now) and \
            all(_within(a, b, tol) for a, b in zip(was, now))
    if isinstance(was, str) or isinstance(now, str):
        return was == now
    return math.isclose(was, now, rel_tol=1e-9, abs_tol=tol) or (math.isnan(was) and math.isnan(now))


# --------------------------------------------------------------------------- prose


def render(markdown: str, table: dict[str, dict], origin: str = "prose", strict: bool = True) -> str:
    """The markdown with every ``{{name}}`` (or ``{{name:fmt}}``) replaced by its claim's text.

    A claim with no recorded value is an error, or (``strict=False``) left as it is.
    """
    def text(match: re.Match) -> str:
        name, fmt = match.group(1), match.group(2)
        if name not in table and not strict:
            return match.group(0)
        if name not in table:
            raise ValueError(f"{origin}: the prose refers to the claim {name!r}, which no run has "
                             "recorded; record it with claim(...) in a cell, then run "
                             "`python -m utils.claims record`")
        entry = table[name]
        return _text(entry["value"], "{:" + fmt.strip() + "}") if fmt else entry["text"]
    return PLACEHOLDER.sub(text, markdown)


def claim_names(markdown: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(markdown)]


_NOT_PROSE = [
    re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M),  # fenced blocks (shell commands, output)
    re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S),  # LaTeX
    re.compile(r"`[^`\n]*`"),  # code
    PLACEHOLDER,  # claims
    re.compile(r"\]\([^)]*\)|https?://\S+|<[^>\n]*>"),  # link targets, addresses, HTML tags
    re.compile(r"^#.*$", re.M),  # headings: section numbers
    re.compile(r"^>\s*Difficulty:.*$", re.M),  # an exercise's header
    re.compile(r"\b(?:1[89]|20)\d\d[a-z]?\b"),  # years, as in citations
]
_NUMBER = re.compile(r"(?<![\w.\-/^])[−-]?\d(?:[\d,]*\d)?(?:\.\d+)?%?(?![\w]|-[A-Za-z]|\.\d)")
_SMALL_INTEGER = re.compile(r"[−-]?(?:\d|10)")


def literal_numbers(markdown: str) -> list[str]:
    """Numbers the prose states outside claims: each must become a ``{{claim}}``.

    Not counted: code, math, headings, exercise headers, links, years, compounds such as
    "2-D" or "6-layer", digits inside words ("L1", "word2vec"), the references section, and
    integers from 0 to 10, which are mostly definitions (labels 0 and 1, Uniform[0, 1), 5
    features in 2 dimensions). A small integer that is a result ("8 of 8 instances") must
    still be a claim: review sees to that, this function cannot.
    """
    text = re.split(r"^#+\s*(?:References|Further reading)\b", markdown, flags=re.M | re.I)[0]
    for pattern in _NOT_PROSE:
        text = pattern.sub(" ", text)
    return [n for n in _NUMBER.findall(text) if not _SMALL_INTEGER.fullmatch(n)]


# --------------------------------------------------------------------------- running notebooks


def execute(path: Path, workdir: Path, timeout: int = 1200):
    """Run a notebook in ``workdir`` (never where Jupyter started); returns it and its claims."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    recording = Path(workdir) / ".claims.jsonl"
    recording.unlink(missing_ok=True)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    # the inline backend, not Agg: the figures must be in the outputs, the site shows them
    client.execute(env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                        RECORD_TO: str(recording)})
    return notebook, read_recording(recording)


def record(stems: list[str]) -> None:
    """Run the solved notebooks, store their claims, and regenerate the notebooks."""
    from utils import notebooks

    sources = [s for s in sorted(notebooks.SOURCES.glob("*.md")) if not stems or s.stem in stems]
    for source in sources:
        notebooks.write(source, strict=False)  # the current code, whatever is recorded so far
        with tempfile.TemporaryDirectory() as scratch:
            _, claims = execute(notebooks.targets(source)[1], Path(scratch))
        TABLES.mkdir(parents=True, exist_ok=True)
        table_path(source.stem).write_text(json.dumps(claims, indent=1, sort_keys=True) + "\n",
                                           encoding="utf-8")
        print(f"{source.stem}: {len(claims)} claims recorded")
    notebooks.main([s.stem for s in sources])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["record"], help="record: run the solved notebooks and store their claims")
    parser.add_argument("stems", nargs="*", metavar="STEM", help="only these chapters (e.g. 1_embedding_arithmetic)")
    args = parser.parse_args(argv)
    record(args.stems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
