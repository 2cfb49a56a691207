"""The solved notebooks through nbval: a pytest report per code cell.

    python -m utils.cells [STEM ...]          (make nbval [CHAPTERS="1_embedding_arithmetic ..."])

nbval, the Jupyter community's pytest plugin, runs a notebook's code cells one by one in a
kernel and reports each as a test item, so a failure names its cell and shows its traceback.
``--nbval-lax`` asks only that each cell runs: the solved notebooks are committed without
outputs, so there is nothing saved to compare with. nbval starts the kernel in the
notebook's own folder; each notebook is copied to a scratch folder first, so that a run
never writes into ``solutions/``.

``make test`` runs each solved notebook once, with nbclient (``tests/conftest.py``), because
that one run's outputs also feed the claims check and the course pages, which an nbval run
does not keep. This command is the per-cell view of the same notebooks; the tests run it on
one chapter so that it keeps working.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from utils import notebooks


def run(stems: list[str] | None = None, pytest_args: list[str] | None = None) -> int:
    """Run the solved notebooks of ``stems`` (every chapter if none) through nbval; pytest's
    exit status."""
    sources = notebooks.chapter_sources(stems or None)
    with tempfile.TemporaryDirectory(prefix="nbval-") as scratch:
        scratch = Path(scratch)
        (scratch / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # none of the project's options
        copies = []
        for source in sources:
            solved = notebooks.targets(source)[1]
            copies.append(shutil.copyfile(solved, scratch / solved.name))
        command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                   "-c", str(scratch / "pytest.ini"), "--rootdir", str(scratch), *(pytest_args or []),
                   *map(str, copies)]
        return subprocess.run(command, cwd=scratch).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.cells", description=__doc__.split("\n\n")[0])
    parser.add_argument("stems", nargs="*", metavar="STEM", help="only these chapters (e.g. 3_toy_superposition)")
    args, pytest_args = parser.parse_known_args(argv)
    try:
        return run(args.stems, pytest_args)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
