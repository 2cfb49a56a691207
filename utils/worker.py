"""The student's side of grading, run as ``python -I -m utils.worker`` by ``utils.sandbox``.

It reads one job (JSON) from stdin: the submission's statements, the chapter's check
source, the exercises to run and the seed. It runs the statements, then every case of
every exercise, and writes one JSON line per event to the result pipe. Only plain data
(``utils.plain``) is written; nothing is compared here, so nothing here decides a score.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import types


class _Blocked(importlib.abc.MetaPathFinder):
    """Refuses imports of the reference solutions and the hidden checks."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not available while grading)",
                                      name=fullname)
        return None


def main() -> None:
    job = json.loads(sys.stdin.read())
    out = os.fdopen(job["result_fd"], "w", buffering=1)

    def send(**event):
        out.write(json.dumps(event) + "\n")
        out.flush()

    from utils import plain
    from utils.checks import describe_exception, run_case

    checks = types.ModuleType("hidden_checks")
    checks.__file__ = job["checks_filename"]
    exec(compile(job["checks_source"], job["checks_filename"], "exec"), checks.__dict__)
    suite = checks.suite

    for name in job["blocked"]:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    sys.meta_path.insert(0, _Blocked(job["blocked"]))
    # the student's output goes to a log, so it can't interleave with results
    log = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)

    submission = types.ModuleType("__main__")
    sys.modules["__main__"] = submission
    namespace = submission.__dict__
    skip = set(job["skip"])
    for i, statement in enumerate(job["statements"]):
        if i in skip:
            continue
        send(event="statement", index=i)
        try:
            exec(compile(statement["code"], f"<{statement['origin']}>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: grading goes on
            send(event="statement_error", index=i, error=describe_exception(exc))
    impl = types.SimpleNamespace(**namespace)

    for exercise in job["exercises"]:
        send(event="exercise", name=exercise)
        for case in suite.cases_for(exercise):
            try:
                outcome = run_case(case, impl, job["seed"])
                payload = {"error": outcome.error} if outcome.error is not None else \
                    {"value": plain.encode(outcome.value)}
            except SystemExit as exc:
                payload = {"error": f"the code called sys.exit({exc.code!r}); a function must return"}
            except BaseException as exc:  # noqa: BLE001
                payload = {"error": describe_exception(exc)}
            send(event="case", id=case.id, **payload)
    send(event="done")


if __name__ == "__main__":
    main()
