"""The course's web pages: ``python -m utils.site`` (``make site``).

One page per chapter, made from its solved notebook after a run: the prose, the code, what
it prints and the figures it draws. Each exercise shows the learner's stub, then the
reference solution collapsed ("Show solution"), then the check's output and everything after
it, visible: the output to expect. An index page links the chapters and their sections.

    python -m utils.site [--out build/site] [STEM ...]

runs each solved notebook once (minutes each), then builds the pages with Sphinx and myst-nb
(configured in ``site/``) into OUT; open ``OUT/index.html``. Nothing is fetched from the
internet, then or when the pages are viewed. The tests build the same pages from the runs
they already made (``build_site``), so a notebook is never run twice for them.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from utils import claims, notebooks

CONFIG = notebooks.ROOT / "site"  # conf.py and the index page
DEFAULT_OUT = notebooks.ROOT / "build" / "site"
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}


def chapter_page(executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A chapter's page, from its solved notebook after a run.

    Each exercise's reference cell (marked by the builder's ``exercise`` metadata) gets the
    learner's stub before it and its source collapsed; its outputs, and the check's after
    it, stay visible. The check that the kernel has the course installed is for learners'
    kernels, not for readers: it is left out.
    """
    page = copy.deepcopy(executed)
    cells = []
    for cell in page.cells:
        if cell.source == notebooks.ENVIRONMENT_CHECK:
            continue
        if cell.cell_type == "code" and "exercise" in cell.metadata:
            stub = nbformat.v4.new_code_cell(notebooks.stub(cell.source, cell.metadata.get("methods")))
            stub.id = f"{cell.id}-stub"
            cells.append(stub)
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "hide-input"]
            cell.metadata["mystnb"] = dict(SOLUTION_PROMPTS)
        cells.append(cell)
    page.cells = cells
    return page


def check_out(out: Path) -> None:
    """Refuse an output folder that holds anything but a site built before: it is replaced."""
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():  # Sphinx's mark
        raise ValueError(f"{out} is not empty and holds no site built before: choose another "
                         "output folder (--out), or empty this one")


def build_site(executed: dict[str, nbformat.NotebookNode], out: Path) -> list[Path]:
    """Build the pages from solved notebooks after a run (by chapter stem) into ``out``.

    Returns the HTML pages written. ``out`` is replaced, so it must be a folder this
    function built before, an empty one, or not exist yet.
    """
    check_out(out)
    with tempfile.TemporaryDirectory(prefix="course-site-") as scratch:
        source = Path(scratch) / "source"
        shutil.copytree(CONFIG, source, ignore=shutil.ignore_patterns("__pycache__"))
        (source / "chapters").mkdir()
        for stem, notebook in executed.items():
            nbformat.write(chapter_page(notebook), source / "chapters" / f"{stem}.ipynb")
        built = Path(scratch) / "html"
        # -W: a warning (a broken reference, an image that is missing) fails the build
        result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                                 "-d", str(Path(scratch) / "doctrees"), str(source), str(built)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Sphinx could not build the site:\n{result.stderr or result.stdout}")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(built, out)
    return sorted(p for p in out.rglob("*.html") if "_static" not in p.relative_to(out).parts)  # not theme parts


def run_chapters(stems: list[str] | None = None) -> dict[str, nbformat.NotebookNode]:
    """Run each chapter's solved notebook once, each in a scratch directory; by stem."""
    executed = {}
    for source in notebooks.chapter_sources(stems):
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{source.stem}-") as workdir:
            executed[source.stem], _ = claims.execute(notebooks.targets(source)[1], Path(workdir))
        print(f"ran {source.stem} in {time.monotonic() - started:.0f} s", flush=True)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("stems", nargs="*", metavar="STEM", help="only these chapters (e.g. 5_binding)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the site (default: build/site)")
    args = parser.parse_args(argv)
    try:
        notebooks.chapter_sources(args.stems)  # bad input fails before minutes of running
        check_out(args.out)
    except ValueError as error:
        parser.error(str(error))
    executed = run_chapters(args.stems)
    started = time.monotonic()
    pages = build_site(executed, args.out)
    print(f"built {len(pages)} pages in {time.monotonic() - started:.0f} s: open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
