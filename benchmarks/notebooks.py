"""Benchmark: execute every solved notebook end to end and print the wall-clock times.

Budget: each chapter at most 5 minutes on 2 CPU cores, the whole course at most 20.

    .venv/bin/python benchmarks/notebooks.py [STEM ...]
"""

import os
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

from utils import notebooks


def main(stems: list[str]) -> None:
    rows = []
    for source in sorted(notebooks.SOURCES.glob("*.md")):
        if stems and source.stem not in stems:
            continue
        _, path = notebooks.targets(source)
        notebook = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            NotebookClient(notebook, timeout=1200, kernel_name="python3",
                           resources={"metadata": {"path": scratch}}).execute(
                env={**os.environ, "MPLBACKEND": "Agg"})
            rows.append((source.stem, time.perf_counter() - start))
        print(f"{rows[-1][0]:32s} {rows[-1][1]:7.1f} s", flush=True)
    print(f"{'total':32s} {sum(s for _, s in rows):7.1f} s  (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main(sys.argv[1:])
