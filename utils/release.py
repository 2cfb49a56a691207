"""The course's two releases, built from its one source: ``python -m utils.release``.

* ``self-study``: every chapter's notebook with each exercise's reference solution collapsed
  right under it, for people studying alone. ``chapters/`` holds this edition.
* ``class``: the same notebooks with no solution anywhere, for graded courses: the one to
  hand out. It is never committed, only built.

    python -m utils.release [--out build/release] [STEM ...]

writes ``OUT/self-study/<stem>.ipynb`` and ``OUT/class/<stem>.ipynb`` from chapters/src/ and
solutions/ (the notebook builder, ``utils.notebooks``, so neither can drift from them). Each
edition's folder is emptied first, so nothing stale or edited by hand survives in it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from utils import notebooks

RELEASES = ("self-study", "class")
DEFAULT_OUT = notebooks.ROOT / "build" / "release"


def write_releases(out: Path, stems: list[str] | None = None) -> dict[str, list[Path]]:
    """Write both releases under ``out``; the notebooks written, by release."""
    sources = notebooks.chapter_sources(stems)  # an unknown chapter fails before anything is removed
    written: dict[str, list[Path]] = {release: [] for release in RELEASES}
    for release in RELEASES:
        folder = out / release
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for source in sources:
        editions = notebooks.build(source)
        for release in RELEASES:
            path = out / release / f"{source.stem}.ipynb"
            path.write_text(notebooks.render(editions[release]), encoding="utf-8")
            written[release].append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("stems", nargs="*", metavar="STEM", help="only these chapters (e.g. 5_binding)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where to write the releases (default: build/release)")
    args = parser.parse_args(argv)
    try:
        written = write_releases(args.out, args.stems)
    except ValueError as error:
        parser.error(str(error))
    for release, paths in written.items():
        print(f"{release}: {len(paths)} notebooks in {args.out / release}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
