"""`make lab`: the learner's workspace never loses an edit, and the server it starts serves
the course (as root too) to a real client over Jupyter's REST and WebSocket API."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest
import websocket

from utils import lab, notebooks

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the workspace


def _notebook(path: Path, *sources: str, outputs: bool = False) -> None:
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if outputs:
        for cell in cells:
            cell.outputs = [nbformat.v4.new_output("stream", text="ran\n")]
            cell.execution_count = 1
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)


@pytest.fixture
def folders(tmp_path):
    templates, workspace = tmp_path / "chapters", tmp_path / "workspace"
    templates.mkdir()
    _notebook(templates / "1_a.ipynb", "def f():\n    raise NotImplementedError()")
    _notebook(templates / "2_b.ipynb", "def g():\n    raise NotImplementedError()")
    return templates, workspace


def test_first_start_copies_every_template(folders):
    templates, workspace = folders
    said = lab.prepare_workspace(workspace, templates)
    assert sorted(p.name for p in workspace.glob("*.ipynb")) == ["1_a.ipynb", "2_b.ipynb"]
    assert len(said) == 2 and lab.prepare_workspace(workspace, templates) == []


def test_a_new_template_replaces_an_untouched_copy_even_one_that_was_run(folders):
    templates, workspace = folders
    lab.prepare_workspace(workspace, templates)
    _notebook(workspace / "1_a.ipynb", "def f():\n    raise NotImplementedError()", outputs=True)
    _notebook(templates / "1_a.ipynb", "def f():\n    '''Better docs.'''\n    raise NotImplementedError()")
    said = lab.prepare_workspace(workspace, templates)
    assert said == ["updated workspace/1_a.ipynb to the course's new version"]
    assert "Better docs" in (workspace / "1_a.ipynb").read_text()


def test_a_new_template_never_overwrites_the_learners_answers(folders):
    templates, workspace = folders
    lab.prepare_workspace(workspace, templates)
    _notebook(workspace / "1_a.ipynb", "def f():\n    return 42")  # the learner's answer
    _notebook(templates / "1_a.ipynb", "def f():\n    '''Better docs.'''\n    raise NotImplementedError()")
    said = lab.prepare_workspace(workspace, templates)
    assert "is kept as it is" in said[0]
    assert "return 42" in (workspace / "1_a.ipynb").read_text()
    assert "Better docs" in (workspace / "updates" / "1_a.ipynb").read_text()
    assert lab.prepare_workspace(workspace, templates) == []  # said once, not on every start
    assert "return 42" in (workspace / "1_a.ipynb").read_text()


def test_regenerating_an_edited_template_moves_it_to_the_workspace(tmp_path, monkeypatch):
    """A learner who typed answers into chapters/ (not workspace/) loses nothing to the build."""
    template = tmp_path / "1_embedding_arithmetic.ipynb"
    shutil.copyfile(ROOT / "chapters" / template.name, template)
    assert not notebooks.edited_by_hand(template)
    edited = json.loads(template.read_text())
    stub = next(c for c in edited["cells"] if "raise NotImplementedError()" in "".join(c["source"]))
    stub["source"] = "".join(stub["source"]).replace("raise NotImplementedError()", "return E / E.norm()")
    template.write_text(json.dumps(edited))
    assert notebooks.edited_by_hand(template)
    monkeypatch.setattr(lab, "WORKSPACE", tmp_path / "workspace")
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    notebooks._save(template, (ROOT / "chapters" / template.name).read_text())
    assert "return E / E.norm()" in (tmp_path / "workspace" / template.name).read_text()
    assert not notebooks.edited_by_hand(template)


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A JupyterLab server started with ``make lab``'s own command line."""

    def __init__(self, tmp_path: Path, root: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.log = tmp_path / "server.log"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR":
               str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
        self.process = subprocess.Popen(
            lab.command(f"--port={self.port}", "--no-browser", "--ServerApp.port_retries=0",
                        f"--IdentityProvider.token={self.token}", root=root, workspace=root / "workspace"),
            cwd=root, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def request(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return json.loads(text) if text else None

    def wait_until_up(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited:\n{self.log.read_text()}"
            try:
                self.request("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the server did not answer within {seconds} s:\n{self.log.read_text()}")

    def execute(self, kernel_id: str, code: str, seconds: float = 300) -> list[dict]:
        """Run ``code`` in the kernel over the WebSocket channels; the messages it produced."""
        channel = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}", timeout=seconds)
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        channel.send(json.dumps({
            "header": {"msg_id": msg_id, "session": session, "username": "test", "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        replies = []
        while True:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            replies.append(message)
            if message["msg_type"] == "execute_reply":
                channel.close()
                return replies

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def test_make_lab_serves_the_course_and_runs_chapter_1s_setup(tmp_path):
    """The course's notebooks, in a copy of the course folder, through `make lab`'s command line."""
    course = tmp_path / "course"
    shutil.copytree(ROOT / "chapters", course / "chapters", ignore=shutil.ignore_patterns("src", "claims"))
    lab.prepare_workspace(course / "workspace", course / "chapters")
    server = Server(tmp_path, course)
    try:
        server.wait_until_up()
        names = {p.name for p in (ROOT / "chapters").glob("*.ipynb")}
        for folder in ("chapters", "workspace"):
            listed = {item["name"] for item in server.request("GET", f"/api/contents/{folder}")["content"]}
            assert names <= listed, folder
        kernel = server.request("POST", "/api/kernels", {"name": "python3", "path": "workspace"})
        template = nbformat.read(ROOT / "chapters" / "1_embedding_arithmetic.ipynb", as_version=4)
        code_cells = [c.source for c in template.cells if c.cell_type == "code"]
        setup = code_cells[:next(i for i, s in enumerate(code_cells) if "import check" in s) + 1]
        replies = server.execute(kernel["id"], "\n".join(setup) + "\nprint('ready', check.__name__)")
        reply = replies[-1]["content"]
        assert reply["status"] == "ok", reply
        printed = "".join(m["content"].get("text", "") for m in replies if m["msg_type"] == "stream")
        assert "ready check" in printed
        server.request("DELETE", f"/api/kernels/{kernel['id']}")
    finally:
        server.stop()
