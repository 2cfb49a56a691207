"""pytest options for grading: ``pytest --submission PATH [--chapter NAME]``.

A pytest plugin, registered by the course's installation (``pyproject.toml``, entry point
``pytest11``), so that pytest knows the options before it reads any argument: from any
directory, with a submission anywhere.

Without ``--submission`` the hidden checks run against ``solutions/`` (and the project's
own tests run too). With it, only the hidden checks of the submission's chapter run, and
the submission's code runs in the grader's sandbox (``utils.grading``).
"""

from pathlib import Path

import pytest

from utils.checks import CHAPTERS

TESTS = Path(__file__).resolve().parents[1] / "tests"


def pytest_addoption(parser):
    group = parser.getgroup("course")
    group.addoption("--submission", metavar="PATH", help="a student's notebook or .py file to check")
    group.addoption("--chapter", metavar="NAME", choices=CHAPTERS,
                    help="the submission's chapter (inferred from its name or definitions if omitted)")


def _submission_chapter(config) -> str:
    from utils.grading.submission import infer_chapter, read_submission

    path = config.getoption("--submission")
    if not Path(path).is_file():
        raise pytest.UsageError(f"--submission {path}: no such file (give a notebook or .py file)")
    if config.getoption("--chapter"):
        return config.getoption("--chapter")
    try:
        chapter = infer_chapter(read_submission(path))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"--submission {path}: could not be read ({exc})") from None
    if chapter is None:
        raise pytest.UsageError("could not tell which chapter the submission is for; pass --chapter NAME")
    return chapter


def pytest_configure(config):
    if config.getoption("--submission"):
        config._course_chapter = _submission_chapter(config)
        # the chapter's checks, wherever pytest was started and whatever else was named
        config.args[:] = [str(TESTS / f"test_{config._course_chapter}.py")]


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--submission"):
        return
    wanted = f"test_{config._course_chapter}.py"
    keep = [i for i in items if i.path.name == wanted and i.originalname == "test_hidden_check"]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


@pytest.fixture(scope="session")
def submission_run(request):
    """The submission's run in the sandbox (``utils.grading.runner``), or None for the reference."""
    path = request.config.getoption("--submission")
    if not path:
        return None
    from utils.grading.runner import run_submission
    from utils.grading.submission import read_submission

    return run_submission(read_submission(path), request.config._course_chapter)
