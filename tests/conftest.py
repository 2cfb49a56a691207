"""Fixtures shared by the test modules: each solved notebook, executed once per session, and
a place for the numbers a test measured, printed at the end of the run."""

import pytest

from utils import claims, notebooks


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """``executed(stem)`` -> (that chapter's solved notebook after a run, the claims it made).

    A run takes minutes, so each notebook runs at most once per test session, in a scratch
    directory of its own, and that one run serves every test that needs it: errors and claims
    (test_notebooks.py) and the course site in a browser (test_site.py). A run that fails
    fails every test that asks for it, with the same error, without running again.
    """
    done: dict[str, tuple | Exception] = {}

    def run(stem: str):
        if stem not in done:
            solved = notebooks.targets(notebooks.SOURCES / f"{stem}.md")[1]
            try:
                done[stem] = claims.execute(solved, tmp_path_factory.mktemp(stem))
            except Exception as error:  # noqa: BLE001 - kept and raised again to each asker
                done[stem] = error
        if isinstance(done[stem], Exception):
            raise done[stem]
        return done[stem]
    return run


_MEASURED: list[str] = []


@pytest.fixture(scope="session")
def measured():
    """``measured(line)``: a number a test saw (pages opened, scores, seconds), printed under
    "measured" at the end of the run, so that a CI log carries what the notes quote."""
    return _MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)
