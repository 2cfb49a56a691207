"""Item 3: read the other students' files and reports from the course folder the grader
was started in (tests/test_grader.py fills in where it is: the student knows)."""
from pathlib import Path

CLASS_DIRECTORY = None


def _try(read):
    """``read`` bytes, or why it failed: it may not (denied) or cannot see the file (absent)."""
    try:
        return f"read_{len(read())}_bytes"
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "absent"


def normalize_rows(E, eps=1e-8):
    folder = Path(CLASS_DIRECTORY)
    other = _try(lambda: (folder / "submissions" / "x" / "dup.py").read_bytes())
    reports = _try(lambda: b"".join(p.read_bytes() for p in (folder / "reports").iterdir()))
    listing = _try(lambda: " ".join(p.name for p in folder.iterdir()).encode())
    raise RuntimeError(f"observed other_submission={other} reports={reports} course_folder={listing}")
