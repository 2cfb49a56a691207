"""Open the course in JupyterLab: ``python -m utils.lab`` (what ``make lab`` runs).

A learner works in ``workspace/``, never in ``chapters/``: the notebooks in ``chapters/`` are
templates that the build regenerates, so answers typed there would not be safe. On every
start, each template missing from ``workspace/`` is copied there. A template that changed
since it was copied replaces the learner's copy only if the learner never edited it;
otherwise the copy is kept and the new version is put beside it in ``workspace/updates/``.
Nothing in the course ever deletes or overwrites an edited notebook in ``workspace/``.

The server command line works for everyone who runs it: as root (containers, cloud
machines) it adds ``--allow-root``, and where there is no display it does not try to open
a browser; on a laptop it opens one as usual.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "chapters"
WORKSPACE = ROOT / "workspace"


def digest(path: Path) -> str:
    """What a learner could have changed in a notebook: its cells' kinds and sources.

    Outputs, execution counts and metadata are left out: running a notebook is not editing it.
    """
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    content = [(c.get("cell_type"), "".join(c.get("source", ""))) for c in cells]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def prepare_workspace(workspace: Path = WORKSPACE, templates: Path = TEMPLATES) -> list[str]:
    """Bring ``workspace`` up to date with the templates without losing an edit; what it did."""
    workspace.mkdir(exist_ok=True)
    manifest_path = workspace / ".templates.json"  # each template's digest when last taken in
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    said = []
    for template in sorted(templates.glob("*.ipynb")):
        copy, new = workspace / template.name, digest(template)
        if not copy.exists():
            shutil.copyfile(template, copy)
            said.append(f"copied {template.name} into {workspace.name}/")
        elif manifest.get(template.name) == new:
            continue
        elif digest(copy) == manifest.get(template.name):  # a new template, an untouched copy
            shutil.copyfile(template, copy)
            said.append(f"updated {workspace.name}/{template.name} to the course's new version")
        else:  # a new template, and the learner's own work: keep it
            updates = workspace / "updates"
            updates.mkdir(exist_ok=True)
            shutil.copyfile(template, updates / template.name)
            said.append(f"the course's {template.name} has changed; your {workspace.name}/{template.name} "
                        f"is kept as it is, and the new version is {workspace.name}/updates/{template.name}")
        manifest[template.name] = new
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return said


def command(*extra: str, root: Path = ROOT, workspace: Path = WORKSPACE) -> list[str]:
    """The JupyterLab command line ``make lab`` runs (``extra``: more options, e.g. a port)."""
    # the course folder is the root (so solutions/ is one click away); the workspace opens first
    options = [f"--ServerApp.root_dir={root}", f"--ServerApp.default_url=/lab/tree/{workspace.relative_to(root)}"]
    if os.geteuid() == 0:  # containers, CI and cloud notebooks run as root
        options.append("--allow-root")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        options.append("--no-browser")  # nothing to open it in; the address is printed
    return [sys.executable, "-m", "jupyterlab", *options, *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m utils.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace-only", action="store_true",
                        help="prepare workspace/ and stop (for VS Code or another editor)")
    args = parser.parse_args(argv)
    for line in prepare_workspace():
        print(line)
    print(f"Your work lives in {WORKSPACE}; the notebooks in chapters/ are templates.", flush=True)
    if not args.workspace_only:
        os.chdir(ROOT)
        os.execv(sys.executable, command())


if __name__ == "__main__":
    main()
