"""``python -m utils.grade``: grade a class's notebooks (see ``utils.grading.cli``)."""

import sys

from utils.grading.cli import main

if __name__ == "__main__":
    sys.exit(main())
